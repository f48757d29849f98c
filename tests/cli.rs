//! The command line: `check`, `schema`, `version`, and that every shipped policy is valid.

use std::path::Path;
use std::process::{Command, Output};

fn fortress(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fortress"))
        .args(args)
        .output()
        .expect("run fortress")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_prints_every_error_with_file_line_col() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.yaml");
    let yaml = "\
version: 1
server:
  listen: 127.0.0.1:8443
  admin: nowhere
  upstream: ftp://127.0.0.1:8080
  colour: blue
  timeouts:
    header_read: 10 seconds
default: maybe
routes:
  - name: a
    match: { path: \"/a/{x}\" }
    public: true
  - name: b
    match: { path: \"/a/{y}\", methods: [GET, FETCH] }
    public: true
  - name: a
    match: { path: /c/** }
    timeout: 10
    public: true
  - name: d
    match: { path: \"/e/**/f\" }
    public: true
  - name: e
    match: { path: /private }
";
    std::fs::write(&path, yaml).expect("write");
    let out = fortress(&["check", path.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let p = path.display();
    // Structural errors (unknown key, bad enum value, wrong type) and value errors found while
    // compiling are reported in one run, in file order, each with its own position.
    let expected = [
        format!("{p}:4:10: `nowhere` is not a socket address"),
        format!("{p}:5:13: `ftp://127.0.0.1:8080`: expected http://HOST:PORT"),
        format!("{p}:6:3: unknown key `colour`, expected one of: listen, admin,"),
        format!("{p}:8:18: `10 seconds` is not a duration"),
        format!("{p}:9:10: unknown value `maybe`, expected one of: deny, allow"),
        format!("{p}:15:20: overlaps route `a` (/a/{{x}}) with equal precedence for GET"),
        format!("{p}:15:45: `FETCH` is not a method"),
        format!("{p}:17:11: duplicate route name `a`"),
        format!("{p}:19:14: invalid type: integer `10`, expected a string"),
        format!("{p}:22:20: `**` may only be the last segment"),
        format!("{p}:24:11: route `e` is not `public: true` but no `authentication` is configured"),
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, e) in lines.iter().zip(&expected) {
        assert!(line.starts_with(e.as_str()), "expected {e:?}, got {line:?}");
    }
}

#[test]
fn check_reports_duplicate_keys_and_yaml_syntax_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dup = dir.path().join("dup.yaml");
    std::fs::write(
        &dup,
        "server:\n  listen: 127.0.0.1:1\n  listen: 127.0.0.1:2\n  upstream: http://127.0.0.1:3\n",
    )
    .expect("write");
    let syntax = dir.path().join("syntax.yaml");
    std::fs::write(&syntax, "server: [unclosed\n").expect("write");
    let out = fortress(&[
        "check",
        dup.to_str().expect("utf8"),
        syntax.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:3:3: duplicate key `listen`: each key may appear only once",
            dup.display()
        )),
        "{stderr}"
    );
    let syntax_line = stderr
        .lines()
        .find(|l| l.starts_with(&format!("{}:", syntax.display())))
        .unwrap_or_else(|| panic!("no syntax error line in {stderr}"));
    let pos: Vec<&str> = syntax_line.splitn(4, ':').collect();
    assert!(
        pos[1].parse::<u32>().is_ok() && pos[2].parse::<u32>().is_ok(),
        "{syntax_line}"
    );
}

#[test]
fn check_refuses_missing_file_and_yaml_bombs() {
    let out = fortress(&["check", "/nonexistent/fortress.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("/nonexistent/fortress.yaml: cannot read file"));

    let dir = tempfile::tempdir().expect("tempdir");
    let bomb = dir.path().join("bomb.yaml");
    let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..15 {
        let p = i - 1;
        yaml.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{p}"); 10].join(", ")
        ));
    }
    std::fs::write(&bomb, yaml).expect("write");
    let out = fortress(&["check", bomb.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

#[test]
fn every_shipped_policy_passes_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut files: Vec<String> = std::fs::read_dir(&root)
        .expect("policies/")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut args = vec!["check"];
    args.extend(files.iter().map(String::as_str));
    let out = fortress(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for f in &files {
        assert!(text(&out.stdout).contains(&format!("{f}: ok")));
    }
}

#[test]
fn schema_is_json_schema_of_the_config() {
    let out = fortress(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(schema["title"], "Fortress config");
    assert_eq!(schema["additionalProperties"], false);
    let props = schema["properties"].as_object().expect("properties");
    for key in ["version", "server", "default", "routes"] {
        assert!(props.contains_key(key), "{key}");
    }
    assert_eq!(schema["required"], serde_json::json!(["server"]));
}

#[test]
fn version_prints_the_version() {
    let out = fortress(&["version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("fortress {}\n", env!("CARGO_PKG_VERSION"))
    );
}
