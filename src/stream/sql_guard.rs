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
//! Functions: every call — in any clause, in `FROM` (`FROM generate_series(…)`,
//! `LATERAL f(…)`, `UNNEST`), as a window function, and the special syntax forms
//! `EXTRACT`, `SUBSTRING`, `TRIM`, `POSITION`, `OVERLAY`, `CEIL`, `FLOOR`, `CONVERT` and
//! the bare keywords of [`SQL_VALUE_FUNCTIONS`] (under those names) — must name an entry of
//! `allowed_functions` (an allowlist). `ROW(…)` and `ARRAY(SELECT …)` are constructors. Casts
//! (`CAST(x AS t)`, `x::t`, `t 'literal'`) must target a built-in type of the list in
//! [`cast_target_allowed`]: `reg*` types (`'pg_read_file'::regproc`, `'t'::regclass`) look
//! things up in the catalog, and user-defined types may run their own input functions, so
//! both are refused. `OPERATOR(schema.op)` is refused (it names an operator, so a
//! function, by search path). Expression forms PostgreSQL does not have (lambdas, maps,
//! `MATCH … AGAINST`, …) are refused as unsupported syntax.
//!
//! Names compare as PostgreSQL resolves them: unquoted identifiers fold to lower case,
//! quoted ones keep their case, both are cut to 63 bytes ([`SqlName`]). `orders`, `ORDERS`
//! and `"orders"` are the same table; `"Orders"` is another one.
//!
//! CTE names count as allowed tables, with SQL scoping: the main query sees every CTE of
//! its `WITH`; a CTE body sees the CTEs declared before it (and itself under
//! `WITH RECURSIVE`), so `WITH t AS (SELECT * FROM t) …` still checks the real table `t`.
//! A CTE name only matches an unqualified reference (`s.t` never refers to a CTE).
//!
//! Not checked: column-level access, and what an allowed function does with its
//! arguments. Unqualified function names are trusted to resolve to the built-in ones
//! (PostgreSQL searches `pg_catalog` first unless `search_path` names it later).
//!
//! The policy data ([`SqlGuard`]'s fields) lives in `policy/stream.rs`; this file owns its check.

use std::fmt;
use std::ops::ControlFlow;

use sqlparser::ast::{
    ArrayElemTypeDef, BinaryOperator, DataType, Expr, FunctionArguments, Ident, ObjectName,
    ObjectNamePart, Query, Select, SetExpr, Statement, TableFactor, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::policy::stream::truncate_identifier;
pub use crate::policy::stream::{SqlGuard, SqlName};

/// The line type whose SQL field is checked.
pub const SQL_LINE_TYPE: &str = "technical_view";

/// At most this many bytes of SQL are parsed; longer SQL is refused without parsing.
///
/// Bounds parse time and AST depth: a left-deep chain (`1+1+1…`, `… UNION SELECT …`) nests
/// one AST level per operator, and dropping such an AST recurses once per level; at
/// 16 KiB that stays well inside a 2 MiB worker stack (tested in debug builds).
pub const MAX_SQL_BYTES: usize = 16 * 1024;

/// Longest name kept in a [`SqlRejection`] (longer ones are cut).
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
    /// A table outside `allowed_tables` (the name as PostgreSQL resolves it, possibly cut).
    TableNotAllowed(String),
    /// A function outside `allowed_functions` (the name as PostgreSQL resolves it,
    /// possibly cut).
    FunctionNotAllowed(String),
    /// A cast to a type that is not a plain built-in one (`reg*` types, user-defined
    /// types; the type as written, possibly cut).
    CastNotAllowed(String),
    /// An `OPERATOR(…)` call or an operator that is not built in (as written, possibly cut).
    OperatorNotAllowed(String),
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
            SqlRejection::FunctionNotAllowed(_) => "function_not_allowed",
            SqlRejection::CastNotAllowed(_) => "cast_not_allowed",
            SqlRejection::OperatorNotAllowed(_) => "operator_not_allowed",
        }
    }
}

impl fmt::Display for SqlRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlRejection::TableNotAllowed(name)
            | SqlRejection::FunctionNotAllowed(name)
            | SqlRejection::CastNotAllowed(name)
            | SqlRejection::OperatorNotAllowed(name) => write!(f, "{}: {name}", self.reason()),
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
            function_in_from: None,
        };
        match statement.visit(&mut walker) {
            ControlFlow::Break(rejection) => Err(rejection),
            ControlFlow::Continue(()) => Ok(()),
        }
    }

    fn table_allowed(&self, name: &SqlName) -> bool {
        self.allowed_tables.contains(name)
    }

    fn function_allowed(&self, name: &SqlName) -> bool {
        self.allowed_functions.contains(name)
    }
}

/// One identifier as PostgreSQL resolves it; identifiers quoted other than with `"` are
/// not PostgreSQL syntax.
fn resolve_ident(ident: &Ident) -> Result<String, SqlRejection> {
    match ident.quote_style {
        None => Ok(truncate_identifier(ident.value.to_ascii_lowercase())),
        Some('"') => Ok(truncate_identifier(ident.value.clone())),
        Some(_) => Err(SqlRejection::UnsupportedSyntax),
    }
}

/// A (possibly qualified) name as PostgreSQL resolves it.
fn resolve_name(name: &ObjectName) -> Result<SqlName, SqlRejection> {
    let mut parts = Vec::with_capacity(name.0.len());
    for part in &name.0 {
        match part {
            ObjectNamePart::Identifier(ident) => parts.push(resolve_ident(ident)?),
            ObjectNamePart::Function(_) => return Err(SqlRejection::UnsupportedSyntax),
        }
    }
    Ok(SqlName(parts))
}

/// `text` cut to [`MAX_REPORTED_NAME`] bytes at a character boundary.
fn reported(mut text: String) -> String {
    if text.len() > MAX_REPORTED_NAME {
        let mut cut = MAX_REPORTED_NAME;
        while !text.is_char_boundary(cut) {
            cut = cut.saturating_sub(1);
        }
        text.truncate(cut);
    }
    text
}

/// Built-in types a cast may target (compared in upper case, without length, precision or
/// array brackets). Everything else is refused: the `reg*` types (`regclass`, `regproc`,
/// `regprocedure`, `regoper`, `regoperator`, `regtype`, `regnamespace`, `regrole`,
/// `regconfig`, `regdictionary`, `regcollation`) read the catalog, and a user-defined type
/// or domain may run functions of its own.
pub const CAST_TYPES: &[&str] = &[
    "SMALLINT",
    "INT",
    "INTEGER",
    "BIGINT",
    "INT2",
    "INT4",
    "INT8",
    "REAL",
    "FLOAT",
    "FLOAT4",
    "FLOAT8",
    "DOUBLE PRECISION",
    "NUMERIC",
    "DECIMAL",
    "DEC",
    "BOOLEAN",
    "BOOL",
    "TEXT",
    "VARCHAR",
    "CHARACTER VARYING",
    "CHAR",
    "CHARACTER",
    "BPCHAR",
    "DATE",
    "TIME",
    "TIME WITH TIME ZONE",
    "TIME WITHOUT TIME ZONE",
    "TIMETZ",
    "TIMESTAMP",
    "TIMESTAMP WITH TIME ZONE",
    "TIMESTAMP WITHOUT TIME ZONE",
    "TIMESTAMPTZ",
    "INTERVAL",
    "UUID",
    "JSON",
    "JSONB",
    "BYTEA",
];

/// Whether a cast to `data_type` is allowed (see [`CAST_TYPES`]).
pub fn cast_target_allowed(data_type: &DataType) -> bool {
    match data_type {
        DataType::Array(ArrayElemTypeDef::SquareBracket(inner, _)) => cast_target_allowed(inner),
        DataType::Array(_) => false,
        // A user-defined or unknown name (`regproc`, `my_type`): compared with its quoting,
        // so only an unquoted or lower-case quoted built-in name passes.
        DataType::Custom(name, modifiers) => {
            modifiers.is_empty()
                && resolve_name(name).is_ok_and(|n| match n.0.as_slice() {
                    [one] => CAST_TYPES.iter().any(|t| {
                        t.eq_ignore_ascii_case(one) && one.bytes().all(|b| !b.is_ascii_uppercase())
                    }),
                    _ => false,
                })
        }
        DataType::Regclass => false,
        other => {
            let shown = other.to_string();
            // Drop `(…)` modifiers and collapse spaces: `TIMESTAMP(3) WITH TIME ZONE`.
            let mut base = String::with_capacity(shown.len());
            let mut depth = 0usize;
            for c in shown.chars() {
                match c {
                    '(' => depth = depth.saturating_add(1),
                    ')' => depth = depth.saturating_sub(1),
                    c if depth == 0 => base.push(c.to_ascii_uppercase()),
                    _ => {}
                }
            }
            let base = base.split_whitespace().collect::<Vec<_>>().join(" ");
            CAST_TYPES.contains(&base.as_str())
        }
    }
}

/// Scope frame for one `Query` node.
struct Frame {
    /// CTE names visible to this query from enclosing queries (as PostgreSQL resolves them).
    outer: Vec<String>,
    /// This query's own CTE names (resolved), in declaration order.
    ctes: Vec<String>,
    /// Addresses of this query's CTE bodies, to recognise them when they are visited.
    cte_bodies: Vec<usize>,
    /// `WITH RECURSIVE`.
    recursive: bool,
}

impl Frame {
    fn sees(&self, name: &str) -> bool {
        self.outer.iter().chain(self.ctes.iter()).any(|c| c == name)
    }
}

struct Walker<'g> {
    guard: &'g SqlGuard,
    frames: Vec<Frame>,
    statements: usize,
    /// Address of the name of a function called in `FROM` (`FROM f(…)`, parsed as a table
    /// with arguments): checked as a function, so not as a table.
    function_in_from: Option<usize>,
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
                {
                    let mut names = Vec::with_capacity(with.cte_tables.len());
                    for cte in &with.cte_tables {
                        match resolve_ident(&cte.alias.name) {
                            Ok(name) => names.push(name),
                            Err(rejection) => return ControlFlow::Break(rejection),
                        }
                    }
                    names
                },
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
        if self.function_in_from.take() == Some(relation as *const ObjectName as usize) {
            return ControlFlow::Continue(());
        }
        let name = match resolve_name(relation) {
            Ok(name) => name,
            Err(rejection) => return ControlFlow::Break(rejection),
        };
        if let [single] = name.0.as_slice()
            && self.frames.last().is_some_and(|f| f.sees(single))
        {
            return ControlFlow::Continue(());
        }
        if self.guard.table_allowed(&name) {
            return ControlFlow::Continue(());
        }
        ControlFlow::Break(SqlRejection::TableNotAllowed(reported(name.to_string())))
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<SqlRejection> {
        let verdict = match factor {
            TableFactor::Table {
                sample: Some(_), ..
            } => Err(SqlRejection::UnsupportedSyntax),
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => {
                let checked = self.function(name);
                if checked.is_ok() {
                    self.function_in_from = Some(name as *const ObjectName as usize);
                }
                checked
            }
            TableFactor::Function { name, .. } => self.function(name),
            TableFactor::UNNEST { .. } => self.special("unnest"),
            TableFactor::Table { .. }
            | TableFactor::Derived { .. }
            | TableFactor::NestedJoin { .. } => Ok(()),
            _ => Err(SqlRejection::UnsupportedSyntax),
        };
        match verdict {
            Ok(()) => ControlFlow::Continue(()),
            Err(rejection) => ControlFlow::Break(rejection),
        }
    }

    /// Identifiers quoted other than with `"` are not PostgreSQL identifiers. The parser
    /// reads `SELECT regproc 'pg_sleep'` as a column with a string alias; PostgreSQL reads
    /// it as a typed literal, which runs the type's input function (here a catalog lookup).
    fn pre_visit_ident(&mut self, ident: &Ident) -> ControlFlow<SqlRejection> {
        match ident.quote_style {
            None | Some('"') => ControlFlow::Continue(()),
            Some(_) => ControlFlow::Break(SqlRejection::UnsupportedSyntax),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<SqlRejection> {
        match self.expr(expr) {
            Ok(()) => ControlFlow::Continue(()),
            Err(rejection) => ControlFlow::Break(rejection),
        }
    }
}

impl Walker<'_> {
    /// A call of the function `name`.
    fn function(&self, name: &ObjectName) -> Result<(), SqlRejection> {
        let name = resolve_name(name)?;
        if self.guard.function_allowed(&name) {
            Ok(())
        } else {
            Err(SqlRejection::FunctionNotAllowed(reported(name.to_string())))
        }
    }

    /// A call written in special syntax (`EXTRACT(… FROM …)`) of the built-in `name`.
    fn special(&self, name: &str) -> Result<(), SqlRejection> {
        let name = SqlName(vec![name.to_owned()]);
        if self.guard.function_allowed(&name) {
            Ok(())
        } else {
            Err(SqlRejection::FunctionNotAllowed(name.to_string()))
        }
    }

    /// One expression node (its children are visited on their own).
    fn expr(&self, expr: &Expr) -> Result<(), SqlRejection> {
        match expr {
            // `ROW(…)` (unquoted, unqualified) is PostgreSQL's row constructor, not a call.
            Expr::Function(function)
                if matches!(function.name.0.as_slice(), [ObjectNamePart::Identifier(i)]
                    if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("row")) =>
            {
                Ok(())
            }
            // `ARRAY(SELECT …)` is PostgreSQL's array constructor, not a call.
            Expr::Function(function)
                if matches!(function.args, FunctionArguments::Subquery(_))
                    && matches!(function.name.0.as_slice(), [ObjectNamePart::Identifier(i)]
                        if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("array")) =>
            {
                Ok(())
            }
            Expr::Function(function) => self.function(&function.name),
            // A bare keyword PostgreSQL reads as a function call (`SELECT current_role`).
            Expr::Identifier(ident)
                if ident.quote_style.is_none()
                    && SQL_VALUE_FUNCTIONS
                        .iter()
                        .any(|f| ident.value.eq_ignore_ascii_case(f)) =>
            {
                self.special(&ident.value.to_ascii_lowercase())
            }
            Expr::Cast { data_type, .. } => cast(data_type),
            Expr::TypedString(typed) => cast(&typed.data_type),
            Expr::BinaryOp { op, .. }
            | Expr::AnyOp { compare_op: op, .. }
            | Expr::AllOp { compare_op: op, .. } => operator(op),
            Expr::Extract { .. } => self.special("extract"),
            Expr::Substring { .. } => self.special("substring"),
            Expr::Trim { .. } => self.special("trim"),
            Expr::Position { .. } => self.special("position"),
            Expr::Overlay { .. } => self.special("overlay"),
            Expr::Ceil { .. } => self.special("ceil"),
            Expr::Floor { .. } => self.special("floor"),
            Expr::Convert { .. } => self.special("convert"),
            Expr::Identifier(_)
            | Expr::CompoundIdentifier(_)
            | Expr::CompoundFieldAccess { .. }
            | Expr::IsFalse(_)
            | Expr::IsNotFalse(_)
            | Expr::IsTrue(_)
            | Expr::IsNotTrue(_)
            | Expr::IsNull(_)
            | Expr::IsNotNull(_)
            | Expr::IsUnknown(_)
            | Expr::IsNotUnknown(_)
            | Expr::IsDistinctFrom(..)
            | Expr::IsNotDistinctFrom(..)
            | Expr::InList { .. }
            | Expr::InSubquery { .. }
            | Expr::Between { .. }
            | Expr::Like { .. }
            | Expr::ILike { .. }
            | Expr::SimilarTo { .. }
            | Expr::UnaryOp { .. }
            | Expr::AtTimeZone { .. }
            | Expr::Collate { .. }
            | Expr::Nested(_)
            | Expr::Value(_)
            | Expr::Case { .. }
            | Expr::Exists { .. }
            | Expr::Subquery(_)
            | Expr::GroupingSets(_)
            | Expr::Cube(_)
            | Expr::Rollup(_)
            | Expr::Tuple(_)
            | Expr::Array(_)
            | Expr::Interval(_)
            | Expr::Wildcard(_)
            | Expr::QualifiedWildcard(..) => Ok(()),
            _ => Err(SqlRejection::UnsupportedSyntax),
        }
    }
}

/// Keywords that PostgreSQL reads as calls of the function of that name when written
/// without parentheses (the parser may read some of them as column names).
pub const SQL_VALUE_FUNCTIONS: &[&str] = &[
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "localtime",
    "localtimestamp",
    "session_user",
    "system_user",
    "user",
];

/// A cast to `data_type`.
fn cast(data_type: &DataType) -> Result<(), SqlRejection> {
    if cast_target_allowed(data_type) {
        Ok(())
    } else {
        Err(SqlRejection::CastNotAllowed(reported(
            data_type.to_string(),
        )))
    }
}

/// A binary operator: `OPERATOR(schema.op)` and operators sqlparser does not know (they
/// can only be user-defined, so call user-defined functions) are refused.
fn operator(op: &BinaryOperator) -> Result<(), SqlRejection> {
    match op {
        BinaryOperator::PGCustomBinaryOperator(parts) => Err(SqlRejection::OperatorNotAllowed(
            reported(format!("OPERATOR({})", parts.join("."))),
        )),
        BinaryOperator::Custom(op) => Err(SqlRejection::OperatorNotAllowed(reported(op.clone()))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(read_only: bool) -> SqlGuard {
        let names = ["orders", "Customers", "public.orders"];
        SqlGuard::new("sql", read_only, &names).unwrap_or_else(|_| SqlGuard {
            field: String::new(),
            read_only,
            allowed_tables: Vec::new(),
            allowed_functions: Vec::new(),
        })
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
        ok("SELECT * FROM \"orders\"");
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
        refused("SELECT * FROM \"Orders\"", table("\"Orders\""));
        refused("SELECT * FROM \"orders.x\"", table("\"orders.x\""));
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

    fn func(name: &str) -> SqlRejection {
        SqlRejection::FunctionNotAllowed(name.to_owned())
    }

    fn cast_refused(name: &str) -> SqlRejection {
        SqlRejection::CastNotAllowed(name.to_owned())
    }

    /// A guard with `tables` and `functions` (config syntax).
    fn custom(tables: &[&str], functions: &[&str]) -> SqlGuard {
        let mut g = guard(true);
        g.allowed_tables = tables
            .iter()
            .filter_map(|t| SqlName::parse(t).ok())
            .collect();
        g.allowed_functions = functions
            .iter()
            .filter_map(|f| SqlName::parse(f).ok())
            .collect();
        assert_eq!(g.allowed_tables.len(), tables.len());
        assert_eq!(g.allowed_functions.len(), functions.len());
        g
    }

    #[test]
    fn default_functions_are_allowed_in_every_spelling() {
        for sql in [
            "SELECT count(*), sum(total), avg(total), min(total), max(total) FROM orders",
            "SELECT COUNT(*) FROM orders",
            "SELECT count(DISTINCT customer_id) FROM orders",
            "SELECT count(*) FILTER (WHERE total > 1) FROM orders",
            "SELECT lower(name), UPPER(name), \"lower\"(name), Length(name) FROM customers",
            "SELECT substring(name from 1 for 2), substring(name, 1, 2), substr(name, 2) FROM customers",
            "SELECT trim(name), trim(both 'x' from name), btrim(name), ltrim(name) FROM customers",
            "SELECT concat(a, b), concat_ws(',', a, b), replace(a, 'x', 'y') FROM orders",
            "SELECT coalesce(a, 0), nullif(a, 0), greatest(a, b), least(a, b) FROM orders",
            "SELECT round(total, 2), abs(total), floor(total), ceil(total), ceiling(total) FROM orders",
            "SELECT date_trunc('day', created), extract(year from created), date_part('year', created) FROM orders",
            "SELECT now(), current_date, current_timestamp, localtimestamp",
            "SELECT position('a' in name), overlay(name placing 'x' from 1) FROM customers",
            "SELECT to_char(created, 'YYYY'), to_date('2020', 'YYYY'), to_number('1', '9')",
            "SELECT row_number() OVER (ORDER BY id), rank() OVER w FROM orders WINDOW w AS (PARTITION BY cid)",
            "SELECT dense_rank() OVER (PARTITION BY lower(name) ORDER BY abs(total)) FROM orders",
            "SELECT * FROM orders WHERE lower(status) = 'open' ORDER BY coalesce(total, 0)",
            "SELECT cid, max(total) FROM orders GROUP BY cid HAVING count(*) > 1",
            "SELECT * FROM orders o JOIN customers c ON lower(c.id) = lower(o.cid)",
            "SELECT created AT TIME ZONE 'UTC' FROM orders",
            "SELECT name COLLATE \"C\" FROM customers",
            "SELECT CASE WHEN total > 1 THEN upper(name) ELSE lower(name) END FROM orders",
        ] {
            ok(sql);
        }
    }

    #[test]
    fn functions_that_reach_outside_the_tables_are_refused() {
        for (sql, name) in [
            (
                "SELECT query_to_xml('select * from secrets', true, true, '')",
                "query_to_xml",
            ),
            ("SELECT dblink('host=x', 'select 1')", "dblink"),
            (
                "SELECT dblink_exec('host=x', 'drop table orders')",
                "dblink_exec",
            ),
            ("SELECT set_config('role', 'admin', false)", "set_config"),
            ("SELECT nextval('orders_id_seq')", "nextval"),
            ("SELECT setval('orders_id_seq', 1)", "setval"),
            ("SELECT pg_read_file('/etc/passwd')", "pg_read_file"),
            (
                "SELECT pg_read_binary_file('/etc/passwd')",
                "pg_read_binary_file",
            ),
            ("SELECT pg_ls_dir('.')", "pg_ls_dir"),
            ("SELECT lo_import('/etc/passwd')", "lo_import"),
            ("SELECT lo_export(1234, '/tmp/x')", "lo_export"),
            ("SELECT lo_get(1234)", "lo_get"),
            ("SELECT pg_sleep(10)", "pg_sleep"),
            ("SELECT pg_terminate_backend(42)", "pg_terminate_backend"),
            ("SELECT current_setting('is_superuser')", "current_setting"),
            ("SELECT txid_current()", "txid_current"),
            ("SELECT version()", "version"),
            ("SELECT current_user", "current_user"),
            ("SELECT pg_advisory_lock(1)", "pg_advisory_lock"),
            ("SELECT user", "user"),
            ("SELECT session_user", "session_user"),
            ("SELECT CURRENT_ROLE", "current_role"),
            ("SELECT current_schema", "current_schema"),
            ("SELECT current_schema()", "current_schema"),
            ("SELECT current_catalog", "current_catalog"),
            ("SELECT system_user", "system_user"),
            (
                "SELECT * FROM orders WHERE owner = current_user",
                "current_user",
            ),
        ] {
            refused(sql, func(name));
        }
    }

    #[test]
    fn function_names_resolve_like_postgresql() {
        // Unquoted names fold to lower case; quoted ones keep theirs.
        refused("SELECT PG_READ_FILE('/etc/passwd')", func("pg_read_file"));
        refused("SELECT Pg_Sleep(1)", func("pg_sleep"));
        refused(
            "SELECT \"pg_read_file\"('/etc/passwd')",
            func("pg_read_file"),
        );
        refused("SELECT \"LOWER\"(name) FROM customers", func("\"LOWER\""));
        refused("SELECT \"Lower\"(name) FROM customers", func("\"Lower\""));
        // Qualified calls match only qualified entries.
        refused(
            "SELECT pg_catalog.pg_read_file('/etc/passwd')",
            func("pg_catalog.pg_read_file"),
        );
        refused(
            "SELECT \"pg_catalog\".\"pg_read_file\"('x')",
            func("pg_catalog.pg_read_file"),
        );
        refused(
            "SELECT pg_catalog.lower(name) FROM customers",
            func("pg_catalog.lower"),
        );
        refused("SELECT public.count(*) FROM orders", func("public.count"));
        refused(
            "SELECT db.pg_catalog.lower('x')",
            func("db.pg_catalog.lower"),
        );
    }

    #[test]
    fn functions_are_checked_in_every_clause() {
        for sql in [
            "SELECT * FROM orders WHERE id = pg_sleep(1)",
            "SELECT * FROM orders ORDER BY pg_sleep(1)",
            "SELECT * FROM orders GROUP BY pg_sleep(1)",
            "SELECT count(*) FROM orders HAVING pg_sleep(1) IS NULL",
            "SELECT * FROM orders o JOIN customers c ON pg_sleep(1) IS NULL",
            "SELECT * FROM orders WHERE id IN (SELECT pg_sleep(1))",
            "SELECT (SELECT pg_sleep(1)) FROM orders",
            "SELECT * FROM orders WHERE EXISTS (SELECT 1 WHERE pg_sleep(1) IS NULL)",
            "WITH t AS (SELECT pg_sleep(1)) SELECT * FROM t",
            "WITH t AS (SELECT 1) SELECT pg_sleep(1) FROM t",
            "SELECT * FROM orders, LATERAL (SELECT pg_sleep(1)) s",
            "SELECT * FROM orders CROSS JOIN LATERAL pg_sleep(1)",
            "SELECT * FROM pg_sleep(1)",
            "SELECT * FROM (SELECT * FROM orders) s WHERE pg_sleep(1) IS NULL",
            "SELECT lower(pg_sleep(1)::text)",
            "SELECT CASE WHEN true THEN pg_sleep(1) END",
            "VALUES (pg_sleep(1))",
            "SELECT 1 UNION SELECT pg_sleep(1)",
            "SELECT * FROM orders LIMIT pg_sleep(1)",
            "SELECT * FROM orders OFFSET pg_sleep(1)",
            "SELECT DISTINCT ON (pg_sleep(1)) * FROM orders",
            "SELECT count(*) FILTER (WHERE pg_sleep(1) IS NULL) FROM orders",
            "SELECT row_number() OVER (PARTITION BY pg_sleep(1)) FROM orders",
            "SELECT rank() OVER (ORDER BY pg_sleep(1)) FROM orders",
            "SELECT * FROM orders WHERE total > ALL (SELECT pg_sleep(1))",
            "SELECT ARRAY[pg_sleep(1)]",
            "SELECT coalesce(NULL, pg_sleep(1))",
            "SELECT * FROM orders WHERE id BETWEEN 1 AND pg_sleep(1)",
        ] {
            refused(sql, func("pg_sleep"));
        }
        refused(
            "SELECT * FROM generate_series(1, 10)",
            func("generate_series"),
        );
        refused(
            "SELECT * FROM dblink('host=x', 'select 1') AS t(a int)",
            func("dblink"),
        );
        refused(
            "SELECT * FROM orders, LATERAL pg_ls_dir('.') AS f",
            func("pg_ls_dir"),
        );
        refused(
            "SELECT * FROM orders JOIN generate_series(1, 3) g ON true",
            func("generate_series"),
        );
        refused("SELECT * FROM unnest(ARRAY[1, 2])", func("unnest"));
        refused("SELECT lag(total) OVER () FROM orders", func("lag"));
        refused(
            "SELECT percent_rank() OVER w FROM orders WINDOW w AS ()",
            func("percent_rank"),
        );
        refused(
            "SELECT string_agg(name, ',') FROM customers",
            func("string_agg"),
        );
        refused(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders",
            func("percentile_cont"),
        );
    }

    #[test]
    fn the_configured_allowlist_replaces_the_default() {
        let g = custom(
            &["orders"],
            &["unnest", "pg_catalog.lower", "\"Mixed\"", "generate_series"],
        );
        assert_eq!(g.check("SELECT * FROM unnest(ARRAY[1, 2])"), Ok(()));
        assert_eq!(g.check("SELECT * FROM generate_series(1, 3) g"), Ok(()));
        assert_eq!(
            g.check("SELECT * FROM orders, LATERAL generate_series(1, 3)"),
            Ok(())
        );
        assert_eq!(g.check("SELECT pg_catalog.lower(name) FROM orders"), Ok(()));
        assert_eq!(g.check("SELECT PG_CATALOG.LOWER(name) FROM orders"), Ok(()));
        assert_eq!(g.check("SELECT \"Mixed\"(1)"), Ok(()));
        assert_eq!(
            g.check("SELECT lower(name) FROM orders"),
            Err(func("lower"))
        );
        assert_eq!(g.check("SELECT count(*) FROM orders"), Err(func("count")));
        assert_eq!(g.check("SELECT mixed(1)"), Err(func("mixed")));
        assert_eq!(g.check("SELECT \"MIXED\"(1)"), Err(func("\"MIXED\"")));
        // A function allowed in FROM is not a table, and a table is not a function.
        assert_eq!(g.check("SELECT orders(1)"), Err(func("orders")));
        assert_eq!(g.check("SELECT * FROM orders(1)"), Err(func("orders")));
        assert_eq!(
            g.check("SELECT * FROM generate_series"),
            Err(table("generate_series"))
        );

        let none = custom(&["orders"], &[]);
        assert_eq!(none.check("SELECT id FROM orders"), Ok(()));
        assert_eq!(none.check("SELECT id::text FROM orders"), Ok(()));
        for (sql, name) in [
            ("SELECT count(*) FROM orders", "count"),
            ("SELECT extract(year FROM created) FROM orders", "extract"),
            (
                "SELECT substring(name FROM 1 FOR 2) FROM orders",
                "substring",
            ),
            ("SELECT trim(both 'x' FROM name) FROM orders", "trim"),
            ("SELECT position('a' IN name) FROM orders", "position"),
            (
                "SELECT overlay(name PLACING 'x' FROM 1) FROM orders",
                "overlay",
            ),
            ("SELECT ceil(total) FROM orders", "ceil"),
            ("SELECT floor(total) FROM orders", "floor"),
            ("SELECT current_date", "current_date"),
            ("SELECT localtime", "localtime"),
            ("SELECT LOCALTIMESTAMP", "localtimestamp"),
        ] {
            assert_eq!(none.check(sql), Err(func(name)), "{sql}");
        }
    }

    #[test]
    fn casts_to_builtin_types_only() {
        for sql in [
            "SELECT id::int, id::integer, id::bigint, id::smallint, id::int8 FROM orders",
            "SELECT CAST(id AS text), CAST(id AS varchar(10)), id::character varying FROM orders",
            "SELECT total::numeric(10, 2), total::decimal, total::real, total::double precision FROM orders",
            "SELECT '2020-01-01'::date, '10:00'::time, now()::timestamp with time zone",
            "SELECT '2020-01-01'::timestamptz, '2020-01-01'::timestamp(3)",
            "SELECT 'x'::uuid, '{}'::jsonb, '{}'::json, 'x'::bytea, 't'::boolean, 't'::bool",
            "SELECT '{1,2}'::int[], ARRAY['a']::text[]",
            "SELECT DATE '2020-01-01', TIMESTAMP '2020-01-01 00:00', INTERVAL '1 day'",
            "SELECT '1'::\"int4\"",
        ] {
            ok(sql);
        }
        for (sql, shown) in [
            ("SELECT 'pg_read_file'::regproc", "regproc"),
            ("SELECT 'pg_read_file(text)'::regprocedure", "regprocedure"),
            ("SELECT 'secrets'::regclass", "REGCLASS"),
            ("SELECT CAST('secrets' AS regclass)", "REGCLASS"),
            ("SELECT 'pg_catalog'::regnamespace", "regnamespace"),
            ("SELECT 'postgres'::regrole", "regrole"),
            ("SELECT 'int'::regtype", "regtype"),
            ("SELECT '+'::regoper", "regoper"),
            ("SELECT '+(int,int)'::regoperator", "regoperator"),
            ("SELECT 'english'::regconfig", "regconfig"),
            ("SELECT 'x'::pg_catalog.regclass", "pg_catalog.regclass"),
            ("SELECT 'x'::REGPROC", "REGPROC"),
            ("SELECT regclass 'secrets'", "REGCLASS"),
            ("SELECT 'open'::order_status", "order_status"),
            ("SELECT '<a/>'::xml", "xml"),
            ("SELECT '1'::\"INT4\"", "\"INT4\""),
            ("SELECT 'x'::pg_catalog.int4", "pg_catalog.int4"),
            ("SELECT '{x}'::regclass[]", "REGCLASS[]"),
            ("SELECT * FROM orders WHERE id = 'x'::regclass", "REGCLASS"),
            ("SELECT * FROM orders ORDER BY 'x'::regproc", "regproc"),
        ] {
            refused(sql, cast_refused(shown));
        }
        // `type 'literal'` with a type name the parser does not know parses as a column
        // with a string alias; PostgreSQL would run the type's input function.
        for sql in [
            "SELECT regproc 'pg_sleep'",
            "SELECT pg_catalog.regclass 'secrets'",
            "SELECT id 'x' FROM orders",
            "SELECT * FROM orders WHERE id IN (SELECT regproc 'pg_sleep')",
        ] {
            refused(sql, SqlRejection::UnsupportedSyntax);
        }
    }

    #[test]
    fn operator_syntax_and_unknown_operators_are_refused() {
        ok("SELECT name || 'x', total + 1, total % 2, -total FROM orders");
        ok("SELECT * FROM orders WHERE name ~ 'a' AND name !~* 'b' AND name LIKE 'c%'");
        ok("SELECT * FROM orders WHERE tags @> ARRAY[1] AND data->>'k' = 'v'");
        // Operators PostgreSQL has, or that it reads as several (`+++` is `+ + +`).
        ok("SELECT total +++ 1, name @@@ 'x' FROM orders");
        ok("SELECT ROW(1, 2), row(id, total) FROM orders WHERE (id, total) = ROW(1, 2)");
        refused("SELECT \"row\"(1, 2)", func("row"));
        refused("SELECT pg_catalog.row(1, 2)", func("pg_catalog.row"));
        refused("SELECT ROW(1, pg_sleep(1))", func("pg_sleep"));
        ok("SELECT ARRAY(SELECT id FROM orders), ARRAY[1, 2]");
        refused("SELECT ARRAY(SELECT id FROM secrets)", table("secrets"));
        refused("SELECT \"array\"(SELECT 1)", SqlRejection::Unparseable);
        refused("SELECT \"array\"(1)", func("array"));
        // A quoted `"user"` is a column, not the keyword.
        ok("SELECT \"user\", \"current_role\" FROM orders");
        refused(
            "SELECT a <<-> b FROM orders",
            SqlRejection::OperatorNotAllowed("<<->".to_owned()),
        );
        refused(
            "SELECT a ~~~ b FROM orders",
            SqlRejection::OperatorNotAllowed("~~~".to_owned()),
        );
        refused(
            "SELECT 1 OPERATOR(pg_catalog.+) 1",
            SqlRejection::OperatorNotAllowed("OPERATOR(pg_catalog.+)".to_owned()),
        );
        refused(
            "SELECT * FROM orders WHERE id OPERATOR(public.=) 1",
            SqlRejection::OperatorNotAllowed("OPERATOR(public.=)".to_owned()),
        );
        refused(
            "SELECT * FROM orders WHERE id OPERATOR(public.===) 1",
            SqlRejection::Unparseable,
        );
        refused(
            "SELECT * FROM orders ORDER BY id OPERATOR(pg_catalog.-) 1",
            SqlRejection::OperatorNotAllowed("OPERATOR(pg_catalog.-)".to_owned()),
        );
        refused(
            "SELECT * FROM orders WHERE id = ANY (SELECT 1) AND a OPERATOR(+) b",
            SqlRejection::OperatorNotAllowed("OPERATOR(+)".to_owned()),
        );
    }

    #[test]
    fn quoted_table_names_compare_case_sensitively() {
        let g = custom(
            &["orders", "\"Orders\"", "public.orders", "\"Sales\".\"Q1\""],
            &[],
        );
        for sql in [
            "SELECT * FROM orders",
            "SELECT * FROM ORDERS",
            "SELECT * FROM Orders",
            "SELECT * FROM \"orders\"",
            "SELECT * FROM \"Orders\"",
            "SELECT * FROM public.orders",
            "SELECT * FROM PUBLIC.ORDERS",
            "SELECT * FROM \"public\".\"orders\"",
            "SELECT * FROM Public.\"orders\"",
            "SELECT * FROM \"Sales\".\"Q1\"",
        ] {
            assert_eq!(g.check(sql), Ok(()), "{sql}");
        }
        for (sql, name) in [
            ("SELECT * FROM \"ORDERS\"", "\"ORDERS\""),
            ("SELECT * FROM \"orderS\"", "\"orderS\""),
            ("SELECT * FROM \"Public\".orders", "\"Public\".orders"),
            ("SELECT * FROM \"public\".\"Orders\"", "public.\"Orders\""),
            ("SELECT * FROM PUBLIC.\"ORDERS\"", "public.\"ORDERS\""),
            ("SELECT * FROM sales.q1", "sales.q1"),
            ("SELECT * FROM \"Sales\".q1", "\"Sales\".q1"),
            ("SELECT * FROM \"orders \"", "\"orders \""),
        ] {
            assert_eq!(g.check(sql), Err(table(name)), "{sql}");
        }
        // The default guard's `Customers` entry is unquoted, so it is `customers`.
        ok("SELECT * FROM customers");
        ok("SELECT * FROM CUSTOMERS");
        refused("SELECT * FROM \"Customers\"", table("\"Customers\""));
        // CTE names follow the same rules.
        ok("WITH T AS (SELECT 1) SELECT * FROM \"t\"");
        refused("WITH \"T\" AS (SELECT 1) SELECT * FROM t", table("t"));
        ok("WITH \"T\" AS (SELECT 1) SELECT * FROM \"T\"");
        // PostgreSQL cuts identifiers to 63 bytes.
        let long = custom(&[&"a".repeat(63)], &[]);
        assert_eq!(
            long.check(&format!("SELECT * FROM {}", "a".repeat(70))),
            Ok(())
        );
        assert_eq!(
            long.check(&format!("SELECT * FROM {}", "a".repeat(62))),
            Err(table(&"a".repeat(62)))
        );
    }

    #[test]
    fn syntax_postgresql_lacks_or_the_guard_does_not_judge() {
        refused(
            "SELECT * FROM orders TABLESAMPLE SYSTEM (10)",
            SqlRejection::UnsupportedSyntax,
        );
        assert_eq!(func("x").to_string(), "function_not_allowed: x");
        assert_eq!(cast_refused("regproc").reason(), "cast_not_allowed");
        assert_eq!(
            SqlRejection::OperatorNotAllowed("+".to_owned()).reason(),
            "operator_not_allowed"
        );
    }
}
