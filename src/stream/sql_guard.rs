//! SQL guard for `technical_view` stream lines (SPEC §2, "SQL guard").
//!
//! A `technical_view` line may carry the SQL the application ran. When a stream config
//! enables the guard, that SQL is parsed (PostgreSQL dialect) and checked against a schema
//! access policy: exactly one statement, a query (`SELECT`, `WITH … SELECT`, `VALUES`, set
//! operations of those), no data-modifying statement anywhere (also not in a CTE), and
//! every table reference — in `FROM`, joins, derived tables, subqueries in any clause and
//! CTE bodies — inside `allowed_tables`. With `read_only`, `SELECT … INTO` and locking
//! clauses (`FOR UPDATE`, `FOR SHARE`, …) are refused too. Anything the parser does not
//! understand is refused (fail closed).
//!
//! CTE names count as allowed tables, with SQL scoping: the main query sees every CTE of
//! its `WITH`; a CTE body sees the CTEs declared before it (and itself under
//! `WITH RECURSIVE`), so `WITH t AS (SELECT * FROM t) …` still checks the real table `t`.
//! A CTE name only matches an unqualified reference (`s.t` never refers to a CTE).
//!
//! Not checked: functions called by the query (`nextval`, `set_config`, `dblink`, …) and
//! column-level access.
//!
//! The policy data ([`SqlGuard`]'s fields) lives in `policy/stream.rs`; this file owns its check.

use std::fmt;
use std::ops::ControlFlow;

use sqlparser::ast::{
    ObjectName, ObjectNamePart, Query, Select, SetExpr, Statement, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

pub use crate::policy::stream::SqlGuard;

/// The line type whose SQL field is checked.
pub const SQL_LINE_TYPE: &str = "technical_view";

/// At most this many bytes of SQL are parsed; longer SQL is refused without parsing.
///
/// Bounds parse time and AST depth: a left-deep chain (`1+1+1…`, `… UNION SELECT …`) nests
/// one AST level per operator, and dropping such an AST recurses once per level; at
/// 16 KiB that stays well inside a 2 MiB worker stack (tested in debug builds).
pub const MAX_SQL_BYTES: usize = 16 * 1024;

/// Longest table name kept in a [`SqlRejection::TableNotAllowed`] (longer ones are cut).
const MAX_REPORTED_NAME: usize = 128;

/// Why a SQL text was refused. Every variant maps to `Violation::SqlNotAllowed`; this detail
/// is for logs and audit records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlRejection {
    /// The line has no SQL field, or it is not a string, or it appears twice.
    MissingField,
    /// The SQL is longer than [`MAX_SQL_BYTES`].
    TooLong,
    /// The SQL does not parse.
    Unparseable,
    /// No statement at all.
    Empty,
    /// More than one statement.
    MultipleStatements,
    /// A statement that is not a query (DML, DDL, …), also inside a CTE or subquery.
    NotAQuery,
    /// `SELECT … INTO` under `read_only`.
    SelectInto,
    /// A locking clause (`FOR UPDATE`, …) under `read_only`.
    LockingClause,
    /// Syntax the guard does not judge (`TABLE t`, pipe operators, function-valued names).
    UnsupportedSyntax,
    /// A table outside `allowed_tables` (the name as written, possibly cut).
    TableNotAllowed(String),
}

impl SqlRejection {
    /// Short snake_case reason, for logs and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            SqlRejection::MissingField => "missing_field",
            SqlRejection::TooLong => "too_long",
            SqlRejection::Unparseable => "unparseable",
            SqlRejection::Empty => "empty",
            SqlRejection::MultipleStatements => "multiple_statements",
            SqlRejection::NotAQuery => "not_a_query",
            SqlRejection::SelectInto => "select_into",
            SqlRejection::LockingClause => "locking_clause",
            SqlRejection::UnsupportedSyntax => "unsupported_syntax",
            SqlRejection::TableNotAllowed(_) => "table_not_allowed",
        }
    }
}

impl fmt::Display for SqlRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlRejection::TableNotAllowed(name) => write!(f, "table_not_allowed: {name}"),
            other => f.write_str(other.reason()),
        }
    }
}

impl SqlGuard {
    /// Checks one SQL text against the policy.
    pub fn check(&self, sql: &str) -> Result<(), SqlRejection> {
        if sql.len() > MAX_SQL_BYTES {
            return Err(SqlRejection::TooLong);
        }
        let statements =
            Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|_| SqlRejection::Unparseable)?;
        self.check_statements(&statements)
    }

    fn check_statements(&self, statements: &[Statement]) -> Result<(), SqlRejection> {
        let statement = match statements {
            [] => return Err(SqlRejection::Empty),
            [one] => one,
            _ => return Err(SqlRejection::MultipleStatements),
        };
        if !matches!(statement, Statement::Query(_)) {
            return Err(SqlRejection::NotAQuery);
        }
        let mut walker = Walker {
            guard: self,
            frames: Vec::new(),
            statements: 0,
        };
        match statement.visit(&mut walker) {
            ControlFlow::Break(rejection) => Err(rejection),
            ControlFlow::Continue(()) => Ok(()),
        }
    }

    fn table_allowed(&self, parts: &[&str]) -> bool {
        self.allowed_tables.iter().any(|allowed| {
            let mut want = allowed.split('.');
            let mut got = parts.iter();
            loop {
                match (want.next(), got.next()) {
                    (None, None) => return true,
                    (Some(w), Some(g)) if w.eq_ignore_ascii_case(g) => {}
                    _ => return false,
                }
            }
        })
    }
}

/// Scope frame for one `Query` node.
struct Frame {
    /// CTE names visible to this query from enclosing queries (lowercase).
    outer: Vec<String>,
    /// This query's own CTE names (lowercase), in declaration order.
    ctes: Vec<String>,
    /// Addresses of this query's CTE bodies, to recognise them when they are visited.
    cte_bodies: Vec<usize>,
    /// `WITH RECURSIVE`.
    recursive: bool,
}

impl Frame {
    fn sees(&self, name: &str) -> bool {
        self.outer
            .iter()
            .chain(self.ctes.iter())
            .any(|c| c.eq_ignore_ascii_case(name))
    }
}

struct Walker<'g> {
    guard: &'g SqlGuard,
    frames: Vec<Frame>,
    statements: usize,
}

impl Walker<'_> {
    /// CTE names visible inside a query about to be entered.
    fn visible_for(&self, query: &Query) -> Vec<String> {
        let Some(parent) = self.frames.last() else {
            return Vec::new();
        };
        let address = query as *const Query as usize;
        let own = match parent.cte_bodies.iter().position(|b| *b == address) {
            // The body of the parent's k-th CTE: sees the CTEs declared before it, and
            // itself when recursive.
            Some(k) if parent.recursive => k.saturating_add(1),
            Some(k) => k,
            // Anywhere else in the parent (its body, a subquery in any clause).
            None => parent.ctes.len(),
        };
        parent
            .outer
            .iter()
            .chain(parent.ctes.iter().take(own))
            .cloned()
            .collect()
    }
}

/// Refuses statement kinds and syntax inside a query body (iteratively: set operations
/// nest left-deep, one level per `UNION`).
fn check_set_expr(body: &SetExpr) -> Result<(), SqlRejection> {
    let mut stack = vec![body];
    while let Some(expr) = stack.pop() {
        match expr {
            SetExpr::Select(_) | SetExpr::Query(_) | SetExpr::Values(_) => {}
            SetExpr::SetOperation { left, right, .. } => {
                stack.push(left);
                stack.push(right);
            }
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
                return Err(SqlRejection::NotAQuery);
            }
            SetExpr::Table(_) => return Err(SqlRejection::UnsupportedSyntax),
        }
    }
    Ok(())
}

impl Visitor for Walker<'_> {
    type Break = SqlRejection;

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<SqlRejection> {
        self.statements = self.statements.saturating_add(1);
        if self.statements > 1 || !matches!(statement, Statement::Query(_)) {
            return ControlFlow::Break(SqlRejection::NotAQuery);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<SqlRejection> {
        if let Err(rejection) = check_set_expr(&query.body) {
            return ControlFlow::Break(rejection);
        }
        if self.guard.read_only && !query.locks.is_empty() {
            return ControlFlow::Break(SqlRejection::LockingClause);
        }
        if !query.pipe_operators.is_empty() {
            return ControlFlow::Break(SqlRejection::UnsupportedSyntax);
        }
        let outer = self.visible_for(query);
        let (ctes, cte_bodies, recursive) = match &query.with {
            Some(with) => (
                with.cte_tables
                    .iter()
                    .map(|c| c.alias.name.value.to_ascii_lowercase())
                    .collect(),
                with.cte_tables
                    .iter()
                    .map(|c| &*c.query as *const Query as usize)
                    .collect(),
                with.recursive,
            ),
            None => (Vec::new(), Vec::new(), false),
        };
        self.frames.push(Frame {
            outer,
            ctes,
            cte_bodies,
            recursive,
        });
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<SqlRejection> {
        self.frames.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<SqlRejection> {
        if self.guard.read_only && select.into.is_some() {
            return ControlFlow::Break(SqlRejection::SelectInto);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<SqlRejection> {
        let mut parts: Vec<&str> = Vec::with_capacity(relation.0.len());
        for part in &relation.0 {
            match part {
                ObjectNamePart::Identifier(ident) => parts.push(&ident.value),
                ObjectNamePart::Function(_) => {
                    return ControlFlow::Break(SqlRejection::UnsupportedSyntax);
                }
            }
        }
        if let [single] = parts.as_slice()
            && self.frames.last().is_some_and(|f| f.sees(single))
        {
            return ControlFlow::Continue(());
        }
        if self.guard.table_allowed(&parts) {
            return ControlFlow::Continue(());
        }
        let mut name = parts.join(".");
        if name.len() > MAX_REPORTED_NAME {
            let mut cut = MAX_REPORTED_NAME;
            while !name.is_char_boundary(cut) {
                cut = cut.saturating_sub(1);
            }
            name.truncate(cut);
        }
        ControlFlow::Break(SqlRejection::TableNotAllowed(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(read_only: bool) -> SqlGuard {
        SqlGuard {
            field: "sql".to_owned(),
            read_only,
            allowed_tables: vec![
                "orders".to_owned(),
                "Customers".to_owned(),
                "public.orders".to_owned(),
            ],
        }
    }

    fn ok(sql: &str) {
        assert_eq!(guard(true).check(sql), Ok(()), "{sql}");
    }

    fn refused(sql: &str, why: SqlRejection) {
        assert_eq!(guard(true).check(sql), Err(why), "{sql}");
    }

    fn table(name: &str) -> SqlRejection {
        SqlRejection::TableNotAllowed(name.to_owned())
    }

    #[test]
    fn allowed_queries() {
        ok("SELECT id, total FROM orders WHERE total > 10 ORDER BY id LIMIT 5");
        ok("select * from ORDERS o join customers c on c.id = o.customer_id");
        ok("SELECT * FROM \"Orders\"");
        ok("SELECT * FROM public.orders");
        ok("SELECT 1");
        ok("VALUES (1), (2)");
        ok("SELECT id FROM orders UNION ALL SELECT id FROM customers");
        ok("SELECT * FROM orders WHERE customer_id IN (SELECT id FROM customers)");
        ok("SELECT (SELECT count(*) FROM customers) AS n FROM orders");
        ok("SELECT * FROM (SELECT * FROM orders) AS sub");
        ok("SELECT * FROM orders WHERE EXISTS (SELECT 1 FROM customers c WHERE c.id = orders.cid)");
        ok("WITH big AS (SELECT * FROM orders WHERE total > 100) SELECT * FROM big");
        ok(
            "WITH a AS (SELECT * FROM orders), b AS (SELECT * FROM a) SELECT * FROM b JOIN a ON true",
        );
        ok(
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r",
        );
        ok("SELECT 1; ");
    }

    #[test]
    fn tables_outside_the_list() {
        refused("SELECT * FROM secrets", table("secrets"));
        refused(
            "SELECT * FROM orders JOIN secrets ON true",
            table("secrets"),
        );
        refused("SELECT * FROM orders, secrets", table("secrets"));
        refused(
            "SELECT * FROM orders WHERE id IN (SELECT id FROM secrets)",
            table("secrets"),
        );
        refused(
            "SELECT (SELECT max(x) FROM secrets) FROM orders",
            table("secrets"),
        );
        refused(
            "SELECT * FROM orders WHERE EXISTS (SELECT 1 FROM secrets)",
            table("secrets"),
        );
        refused("SELECT * FROM (SELECT * FROM secrets) s", table("secrets"));
        refused(
            "SELECT * FROM orders ORDER BY (SELECT 1 FROM secrets)",
            table("secrets"),
        );
        refused(
            "SELECT id FROM orders UNION SELECT id FROM secrets",
            table("secrets"),
        );
        refused(
            "WITH x AS (SELECT * FROM secrets) SELECT * FROM x",
            table("secrets"),
        );
        refused("SELECT * FROM other.orders", table("other.orders"));
        refused("SELECT * FROM db.public.orders", table("db.public.orders"));
        refused("SELECT * FROM public.customers", table("public.customers"));
        refused(
            "SELECT * FROM pg_read_file('/etc/passwd')",
            table("pg_read_file"),
        );
        refused("SELECT * FROM \"orders.x\"", table("orders.x"));
        refused(
            "SELECT * FROM orders LEFT JOIN LATERAL (SELECT * FROM secrets) s ON true",
            table("secrets"),
        );
    }

    #[test]
    fn cte_names_follow_sql_scoping() {
        // A non-recursive CTE cannot see itself: `secrets` in its body is the real table.
        refused(
            "WITH secrets AS (SELECT * FROM secrets) SELECT * FROM secrets",
            table("secrets"),
        );
        // A CTE is not visible to CTEs declared before it.
        refused(
            "WITH a AS (SELECT * FROM b), b AS (SELECT * FROM orders) SELECT * FROM a",
            table("b"),
        );
        // A CTE name never matches a qualified reference.
        refused(
            "WITH secrets AS (SELECT 1) SELECT * FROM x.secrets",
            table("x.secrets"),
        );
        // CTEs of an inner query are not visible outside it.
        refused(
            "SELECT * FROM (WITH t AS (SELECT 1) SELECT * FROM t) s JOIN t ON true",
            table("t"),
        );
        // But inner queries see outer CTEs.
        ok("WITH t AS (SELECT * FROM orders) SELECT * FROM orders WHERE id IN (SELECT id FROM t)");
        ok("WITH t AS (SELECT 1) SELECT * FROM (WITH u AS (SELECT * FROM t) SELECT * FROM u) s");
    }

    #[test]
    fn statements_that_are_not_queries() {
        for sql in [
            "INSERT INTO orders VALUES (1)",
            "UPDATE orders SET total = 0",
            "DELETE FROM orders",
            "DROP TABLE orders",
            "CREATE TABLE t (id int)",
            "TRUNCATE orders",
            "GRANT SELECT ON orders TO bob",
            "COPY orders TO '/tmp/x'",
            "SET role admin",
            "EXPLAIN ANALYZE DELETE FROM orders",
        ] {
            refused(sql, SqlRejection::NotAQuery);
        }
        refused(
            "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
            SqlRejection::NotAQuery,
        );
        refused(
            "SELECT 1; DELETE FROM orders",
            SqlRejection::MultipleStatements,
        );
        refused("SELECT 1; SELECT 2", SqlRejection::MultipleStatements);
        assert!(guard(true).check("TABLE secrets").is_err());
    }

    #[test]
    fn read_only_refuses_into_and_locks() {
        refused("SELECT * INTO copy FROM orders", SqlRejection::SelectInto);
        refused(
            "SELECT * FROM orders FOR UPDATE",
            SqlRejection::LockingClause,
        );
        refused(
            "SELECT * FROM orders FOR SHARE",
            SqlRejection::LockingClause,
        );
        refused(
            "SELECT * FROM (SELECT * FROM orders FOR UPDATE) s",
            SqlRejection::LockingClause,
        );
        let relaxed = guard(false);
        assert_eq!(relaxed.check("SELECT * FROM orders FOR UPDATE"), Ok(()));
        assert_eq!(
            relaxed.check("DELETE FROM orders"),
            Err(SqlRejection::NotAQuery)
        );
        assert_eq!(
            relaxed.check("SELECT * FROM secrets FOR UPDATE"),
            Err(table("secrets"))
        );
    }

    #[test]
    fn unparseable_empty_and_too_long() {
        refused("SELEKT 1", SqlRejection::Unparseable);
        refused("SELECT * FROM orders WHERE", SqlRejection::Unparseable);
        refused("SELECT 'unterminated", SqlRejection::Unparseable);
        refused("", SqlRejection::Empty);
        refused("  -- only a comment", SqlRejection::Empty);
        let long = format!("SELECT 1{}", " ".repeat(MAX_SQL_BYTES));
        refused(&long, SqlRejection::TooLong);
        assert_eq!(SqlRejection::TooLong.reason(), "too_long");
        assert_eq!(table("x").to_string(), "table_not_allowed: x");
    }

    #[test]
    fn comments_and_dollar_quotes_do_not_hide_statements() {
        // PostgreSQL nests block comments: all of this after `SELECT 1` is one comment.
        ok("SELECT 1 /* nested /* comment */ ; DELETE FROM orders */");
        refused(
            "SELECT 1 /* c */ ; DELETE FROM orders /* */",
            SqlRejection::MultipleStatements,
        );
        ok("SELECT 1 /* nested /* comment */ still comment */");
        ok("SELECT $$ ; DELETE FROM orders $$ FROM orders");
        refused(
            "SELECT 1 -- \n; DELETE FROM orders",
            SqlRejection::MultipleStatements,
        );
    }

    #[test]
    fn worst_case_depth_at_the_size_limit() {
        // Left-deep chains as long as allowed are checked (and dropped) on a 2 MiB stack,
        // the default of tokio workers and test threads, in debug builds too.
        let n = MAX_SQL_BYTES;
        let cases = [
            format!("SELECT 1{}", "+1".repeat((n - 8) / 2)),
            format!("SELECT 1{}", " UNION SELECT 1".repeat((n - 8) / 15)),
            format!(
                "SELECT 1 FROM orders WHERE 1=1{}",
                " AND 1=1".repeat((n - 40) / 8)
            ),
            format!(
                "SELECT {}1{}",
                "(".repeat(n / 2 - 10),
                ")".repeat(n / 2 - 10)
            ),
            format!(
                "SELECT 1 FROM orders WHERE id IN {}1{}",
                "(SELECT ".repeat(n / 10),
                ")".repeat(n / 10)
            ),
        ];
        let handle = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                cases
                    .iter()
                    .map(|sql| (sql.len() <= MAX_SQL_BYTES, guard(true).check(sql).is_ok()))
                    .collect::<Vec<_>>()
            });
        let results = handle.ok().and_then(|h| h.join().ok()).unwrap_or_default();
        assert_eq!(
            results,
            vec![
                (true, true),
                (true, true),
                (true, true),
                (true, false),
                (true, false)
            ]
        );
    }
}
