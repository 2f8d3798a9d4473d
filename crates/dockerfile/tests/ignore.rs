//! `.dockerignore` tables (Docker semantics, not gitignore).

use strata_dockerfile::DockerIgnore;

#[test]
fn dockerignore_table() {
    let cases: &[(&str, &[(&str, bool)])] = &[
        ("*.md", &[("README.md", true), ("docs/README.md", false), ("a.mdx", false)]),
        ("**/*.go", &[("main.go", true), ("a/b/c.go", true), ("a/b/c.gox", false)]),
        ("foo", &[("foo", true), ("foo/bar", true), ("a/foo", false)]),
        ("dir/", &[("dir", true), ("dir/x/y", true), ("dirx", false)]),
        ("./foo", &[("foo", true), ("foo/x", true)]),
        ("/abs/x", &[("abs/x", true), ("abs", false)]),
        ("#comment\n x", &[("#comment", false), ("x", true)]),
        (" #notcomment", &[("#notcomment", true)]),
        ("build\n!build/keep.txt", &[("build/a", true), ("build/keep.txt", false)]),
        ("*\n!src\nsrc/*.tmp", &[("x", true), ("src/a.rs", false), ("src/a.tmp", true)]),
        ("a?c", &[("abc", true), ("a/c", false)]),
        ("[a-c]x", &[("bx", true), ("dx", false)]),
        ("docs/**", &[("docs/a", true), ("docs/a/b", true), ("docsx", false)]),
        ("a/**/b", &[("a/b", true), ("a/x/y/b", true), ("a/x/c", false)]),
        (".", &[("x", false)]),
        ("*", &[(".", false), ("", false)]),
        ("x\n!x\nx", &[("x", true)]),
    ];
    for (text, checks) in cases {
        let di = DockerIgnore::parse(text).unwrap();
        for (path, want) in *checks {
            assert_eq!(di.matches(path, false), *want, "pattern {text:?} path {path:?}");
        }
    }
}

#[test]
fn walker_descend_rule() {
    let di = DockerIgnore::parse("build\n!build/keep.txt").unwrap();
    assert!(di.may_contain_exceptions("build"));
    assert!(!di.may_contain_exceptions("other"));
    // Docker's own limitation: wildcard exceptions do not make it descend.
    let di = DockerIgnore::parse("build\n!**/keep.txt").unwrap();
    assert!(!di.may_contain_exceptions("build"));
    let di = DockerIgnore::parse("build").unwrap();
    assert!(!di.may_contain_exceptions("build"));
}

#[test]
fn malformed_patterns_name_the_line() {
    let e = DockerIgnore::parse("ok\n[bad").unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("[bad"), "{e}");
}
