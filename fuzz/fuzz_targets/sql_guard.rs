//! Arbitrary text through the SQL guard (default function allowlist): it must never panic,
//! whatever the parser makes of it.
#![no_main]

use fortress::stream::sql_guard::SqlGuard;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(sql) = std::str::from_utf8(input) else {
        return;
    };
    let guard = SqlGuard::new("sql", true, &["orders", "public.customers", "\"Mixed\""])
        .expect("valid names");
    let _ = guard.check(sql);
});
