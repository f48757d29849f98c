//! JUnit XML for CI systems: one `testsuite` per tests file, one `testcase` per case, a
//! `failure` carrying the same `FILE:LINE: …` line the terminal shows.

use super::run::TableResult;

/// The report for `results`.
pub fn render(results: &[TableResult]) -> String {
    let total: usize = results.iter().map(|r| r.cases.len()).sum();
    let failed: usize = results.iter().map(|r| r.failures().count()).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"fortress test\" tests=\"{total}\" failures=\"{failed}\">\n"
    ));
    for r in results {
        let file = r.path.display().to_string();
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\">\n",
            escape(&file),
            r.cases.len(),
            r.failures().count()
        ));
        for c in &r.cases {
            let open = format!(
                "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" line=\"{}\"",
                escape(&c.name),
                escape(&file),
                escape(&file),
                c.line
            );
            match &c.failure {
                None => out.push_str(&format!("{open}/>\n")),
                Some(why) => {
                    let line = format!("{file}:{}: case \"{}\": {why}", c.line, c.name);
                    out.push_str(&format!(
                        "{open}>\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                        escape(why),
                        escape(&line)
                    ));
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// XML text and attribute escaping (control characters other than tab and newline are not
/// allowed in XML 1.0: replaced).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' => out.push(ch),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(escape(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(escape("x\u{1}y"), "x\u{FFFD}y");
    }
}
