//! Every relative link in README.md and docs/*.md resolves: the file (or directory) exists,
//! and a `#anchor` names a heading of the target (GitHub's slug rules). The test fails with
//! the list of broken links.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The markdown files checked: the README and every page under docs/.
fn pages() -> Vec<PathBuf> {
    let mut out = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    out.extend(docs);
    out
}

/// Lines outside fenced code blocks, with their numbers.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// The line without its inline code spans.
fn without_code(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// Link targets of a line: inline `[text](target)` and reference definitions `[x]: target`.
fn links(line: &str) -> Vec<String> {
    let line = without_code(line);
    let mut out = Vec::new();
    let t = line.trim_start();
    if t.starts_with('[')
        && let Some(i) = t.find("]: ")
    {
        out.push(
            t[i + 3..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_owned(),
        );
    }
    let mut rest = line.as_str();
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        // Up to the closing parenthesis (balanced, for targets like `a_(b).md`).
        let mut depth = 0usize;
        let mut end = None;
        for (j, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => {
                    end = Some(j);
                    break;
                }
                ')' => depth -= 1,
                _ => {}
            }
        }
        let Some(end) = end else { break };
        // `[text](target "title")`
        let target = after[..end].split_whitespace().next().unwrap_or("");
        out.push(target.trim_matches(['<', '>']).to_owned());
        rest = &after[end..];
    }
    out
}

/// GitHub's anchor for a heading: lower case; markup and punctuation other than `-` and `_`
/// removed; spaces become `-`; a repeated slug gets `-1`, `-2`, ….
fn slug(heading: &str) -> String {
    // Link text only: `[text](target)` → `text`.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(i) = rest.find('[') {
        text.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match (after.find("]("), after.find(')')) {
            (Some(a), Some(b)) if a < b => {
                text.push_str(&after[..a]);
                rest = &after[b + 1..];
            }
            _ => {
                text.push('[');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor of a markdown file.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (_, line) in prose(text) {
        let t = line.trim_start();
        let level = t.chars().take_while(|c| *c == '#').count();
        if level == 0 || level > 6 || !t[level..].starts_with(' ') {
            continue;
        }
        let s = slug(t[level..].trim().trim_end_matches('#').trim());
        let n = seen.entry(s.clone()).or_insert(0);
        out.push(if *n == 0 {
            s.clone()
        } else {
            format!("{s}-{n}")
        });
        *n += 1;
    }
    out
}

/// The number of relative links checked, and the broken ones as `FILE:LINE: target (why)`.
fn broken_links() -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut broken = Vec::new();
    let mut cache: HashMap<PathBuf, Vec<String>> = HashMap::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("read page");
        let shown = page
            .strip_prefix(root())
            .unwrap_or(&page)
            .display()
            .to_string();
        let dir = page.parent().unwrap_or(Path::new("."));
        for (n, line) in prose(&text) {
            for target in links(line) {
                if target.is_empty()
                    || target.contains("://")
                    || target.starts_with("mailto:")
                    || target.starts_with("tel:")
                {
                    continue;
                }
                checked += 1;
                let (file, anchor) = match target.split_once('#') {
                    Some((f, a)) => (f, Some(a)),
                    None => (target.as_str(), None),
                };
                let path = if file.is_empty() {
                    page.clone()
                } else {
                    dir.join(file)
                };
                if !path.exists() {
                    broken.push(format!("{shown}:{n}: {target} (no such file)"));
                    continue;
                }
                let Some(anchor) = anchor else { continue };
                if path.extension().is_none_or(|e| e != "md") {
                    continue;
                }
                let path = path.canonicalize().unwrap_or(path);
                let list = cache.entry(path.clone()).or_insert_with(|| {
                    anchors(&std::fs::read_to_string(&path).unwrap_or_default())
                });
                if !list.iter().any(|a| a == anchor) {
                    broken.push(format!("{shown}:{n}: {target} (no heading #{anchor})"));
                }
            }
        }
    }
    (checked, broken)
}

#[test]
fn every_relative_link_in_the_readme_and_docs_resolves() {
    let (checked, broken) = broken_links();
    // The README and docs link to each other a lot: finding few links means the parser broke.
    assert!(checked > 100, "only {checked} relative links found");
    assert!(
        broken.is_empty(),
        "{} broken link(s):\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn slugs_follow_github_rules() {
    assert_eq!(
        slug("Transport: HTTPS and trusted proxies"),
        "transport-https-and-trusted-proxies"
    );
    assert_eq!(
        slug("Request framing and HTTP/2 limits"),
        "request-framing-and-http2-limits"
    );
    assert_eq!(
        slug("`server.tls` and `trusted_proxies`"),
        "servertls-and-trusted_proxies"
    );
    assert_eq!(slug("See [the guide](x.md) now"), "see-the-guide-now");
    assert_eq!(
        anchors("# A\n## B\n```\n# not a heading\n```\n## B\n"),
        ["a", "b", "b-1"]
    );
    assert_eq!(
        links("see [a](a.md#x), `[b](b.md)` and [c](<c d.md> \"t\")"),
        ["a.md#x", "c"]
    );
}

#[test]
fn a_broken_link_is_reported() {
    // The checker itself: a page with a missing file and a missing anchor.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("t.md"), "# Title\n").expect("write");
    let text = "[ok](t.md#title) [gone](nope.md) [bad](t.md#other)";
    let found: Vec<String> = links(text)
        .into_iter()
        .filter(|t| {
            let (f, a) = t.split_once('#').unwrap_or((t, ""));
            let p = dir.path().join(f);
            !p.exists()
                || (!a.is_empty()
                    && !anchors(&std::fs::read_to_string(&p).unwrap_or_default())
                        .iter()
                        .any(|x| x == a))
        })
        .collect();
    assert_eq!(found, ["nope.md", "t.md#other"]);
}
