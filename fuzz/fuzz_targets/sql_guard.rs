//! Arbitrary text through the SQL guard: it must never panic, whatever the parser makes of
//! it.
#![no_main]

use fortress::stream::sql_guard::SqlGuard;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(sql) = std::str::from_utf8(input) else {
        return;
    };
    let guard = SqlGuard {
        field: "sql".to_owned(),
        read_only: true,
        allowed_tables: vec!["orders".to_owned(), "public.customers".to_owned()],
    };
    let _ = guard.check(sql);
});
