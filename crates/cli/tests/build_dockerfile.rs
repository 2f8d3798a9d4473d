//! Dockerfile semantics end to end: each case builds with the real binary into
//! `-o type=local` and `-o type=oci,tar=false` and checks the final filesystem and the
//! image config read back from the OCI layout (index.json → manifest → config).

#![allow(clippy::print_stderr)]

mod build_util;
mod common;

use build_util::{Env, which};
use serde_json::{Value, json};

fn sorted_tree(b: &build_util::Built) -> String {
    b.tree().join("\n")
}

fn file_line(path: &str, mode: u32, content: &str) -> String {
    format!("{path}: file {mode:o} {}", strata_oci::Digest::of_bytes(content.as_bytes()))
}

#[test]
fn copy_files_dirs_wildcards_and_destinations() {
    let env = Env::new(
        "FROM scratch\n\
         COPY a.txt /a.txt\n\
         COPY a.txt /renamed\n\
         COPY dir /d1/\n\
         COPY dir/ /d2\n\
         COPY *.md /docs/\n\
         COPY a.txt b.txt /multi/\n\
         COPY ../../a.txt /clamped.txt\n\
         COPY dir/sub/deep.txt /e/f/\n\
         WORKDIR /w\n\
         COPY a.txt rel/\n",
        &[
            ("a.txt", "A\n"),
            ("b.txt", "B\n"),
            ("x.md", "X\n"),
            ("y.md", "Y\n"),
            ("dir/one", "1\n"),
            ("dir/sub/deep.txt", "deep\n"),
        ],
    );
    let b = env.build_ok("out", &[]);
    let t = sorted_tree(&b);
    for want in [
        file_line("a.txt", 0o644, "A\n"),
        file_line("renamed", 0o644, "A\n"),
        // `COPY dir /d1/` copies the directory's contents, not the directory itself.
        file_line("d1/one", 0o644, "1\n"),
        file_line("d1/sub/deep.txt", 0o644, "deep\n"),
        file_line("d2/one", 0o644, "1\n"),
        file_line("d2/sub/deep.txt", 0o644, "deep\n"),
        file_line("docs/x.md", 0o644, "X\n"),
        file_line("docs/y.md", 0o644, "Y\n"),
        file_line("multi/a.txt", 0o644, "A\n"),
        file_line("multi/b.txt", 0o644, "B\n"),
        // `..` cannot leave the context: it is clamped to its root.
        file_line("clamped.txt", 0o644, "A\n"),
        file_line("e/f/deep.txt", 0o644, "deep\n"),
        // A relative destination is relative to WORKDIR.
        file_line("w/rel/a.txt", 0o644, "A\n"),
    ] {
        assert!(t.contains(&want), "missing {want:?} in\n{t}\n{}", b.log);
    }
    assert!(!b.exists("d1/dir") && !b.exists("d2/dir"), "{t}");
    assert!(!b.exists("docs/a.txt"), "{t}");
    // Wildcard sources and the Dockerfile itself are not copied elsewhere.
    assert!(!b.exists("Dockerfile"), "{t}");
}

#[test]
fn copy_several_sources_needs_a_directory_destination() {
    let env =
        Env::new("FROM scratch\nCOPY a.txt b.txt /notadir\n", &[("a.txt", "A"), ("b.txt", "B")]);
    let o = env.build(&[]);
    let s = common::text(&o);
    assert!(matches!(o.status.code(), Some(1 | 2)), "{s}");
    assert!(s.contains("Dockerfile:2"), "{s}");
    assert!(s.contains("must be a directory") && s.contains("end with a /"), "{s}");
}

#[test]
fn dockerignore_with_exceptions() {
    let env = Env::new(
        "FROM scratch\nCOPY . /ctx/\n",
        &[
            (
                ".dockerignore",
                "*.log\n!keep.log\ntmp\n!tmp/keep\nnested/**/*.bak\nvar\n!var/keep\n",
            ),
            ("a.txt", "A"),
            ("drop.log", "no"),
            ("keep.log", "yes"),
            ("tmp/x", "no"),
            ("tmp/keep", "yes"),
            ("var/other", "no"),
            ("nested/a/b/c.bak", "no"),
            ("nested/a/b/c.txt", "yes"),
        ],
    );
    let b = env.build_ok("out", &[]);
    let t = sorted_tree(&b);
    assert!(b.exists("ctx/a.txt") && b.exists("ctx/keep.log"), "{t}");
    assert!(b.exists("ctx/nested/a/b/c.txt"), "{t}");
    assert!(!b.exists("ctx/drop.log"), "{t}");
    // An exception re-includes a file below an excluded directory.
    assert!(b.exists("ctx/tmp/keep") && !b.exists("ctx/tmp/x"), "{t}");
    // An excluded directory whose exception matches nothing is not copied, not even empty.
    assert!(!b.exists("ctx/var"), "{t}");
    assert!(!b.exists("ctx/nested/a/b/c.bak"), "{t}");
    // Docker sends the Dockerfile and .dockerignore too unless they are ignored.
    assert!(b.exists("ctx/Dockerfile") && b.exists("ctx/.dockerignore"), "{t}");

    // An ignored file cannot be named either.
    let env = Env::new(
        "FROM scratch\nCOPY drop.log /\n",
        &[(".dockerignore", "*.log\n"), ("drop.log", "no")],
    );
    let o = env.build(&[]);
    let s = common::text(&o);
    assert_eq!(o.status.code(), Some(1), "{s}");
    assert!(s.contains("drop.log") && s.contains("not found"), "{s}");
}

fn env_map(cfg: &Value) -> std::collections::BTreeMap<String, String> {
    cfg["config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str()?.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

#[test]
fn arg_and_env_expansion() {
    let env = Env::new(
        "ARG DIR=/opt\n\
         ARG IMG=scratch\n\
         FROM ${IMG}\n\
         ARG DIR\n\
         ARG V\n\
         ARG W=set\n\
         ARG OVER=orig\n\
         ENV A=${V:-dflt} B=${W:+alt} C=${V:+alt}x D=$DIR E=\"${W}-${W}\"\n\
         ENV F=$A\n\
         COPY a.txt ${DIR}/${A}.txt\n\
         LABEL over=${OVER} unset=${NOPE}\n",
        &[("a.txt", "A")],
    );
    let b = env.build_ok("out1", &[]);
    let cfg = b.config();
    let e = env_map(&cfg);
    assert_eq!(e["A"], "dflt", "{cfg}");
    assert_eq!(e["B"], "alt", "{cfg}");
    assert_eq!(e["C"], "x", "{cfg}");
    assert_eq!(e["D"], "/opt", "{cfg}");
    assert_eq!(e["E"], "set-set", "{cfg}");
    assert_eq!(e["F"], "dflt", "{cfg}");
    assert!(b.exists("opt/dflt.txt"), "{}", sorted_tree(&b));
    assert_eq!(cfg["config"]["Labels"], json!({"over": "orig", "unset": ""}), "{cfg}");
    // ARG values are not kept in the image's environment.
    assert!(!e.contains_key("V") && !e.contains_key("OVER"), "{cfg}");

    let b = env.build_ok(
        "out2",
        &["--build-arg", "V=given", "--build-arg", "OVER=new", "--build-arg", "DIR=/srv"],
    );
    let cfg = b.config();
    let e = env_map(&cfg);
    assert_eq!(e["A"], "given", "{cfg}");
    assert_eq!(e["C"], "altx", "{cfg}");
    assert_eq!(e["D"], "/srv", "{cfg}");
    assert!(b.exists("srv/given.txt"), "{}", sorted_tree(&b));
    assert_eq!(cfg["config"]["Labels"]["over"], "new", "{cfg}");
}

#[test]
fn metadata_instructions_are_recorded_in_the_config() {
    let env = Env::new(
        "FROM scratch\n\
         ENV PATH=/usr/bin K=v\n\
         LABEL a=1 \"b c\"=\"d e\"\n\
         WORKDIR /app\n\
         WORKDIR sub\n\
         USER 1000:1000\n\
         EXPOSE 80 53/udp\n\
         VOLUME [\"/data\", \"/logs\"]\n\
         STOPSIGNAL SIGINT\n\
         HEALTHCHECK --interval=5s --retries=3 CMD [\"/bin/check\", \"-q\"]\n\
         ONBUILD COPY x /x\n\
         CMD echo hi\n\
         SHELL [\"/bin/bash\", \"-eu\", \"-c\"]\n\
         ENTRYPOINT [\"/bin/app\", \"--flag\"]\n\
         COPY a.txt .\n",
        &[("a.txt", "A")],
    );
    let b = env.build_ok("out", &[]);
    let cfg = b.config();
    let c = &cfg["config"];
    assert_eq!(env_map(&cfg).get("K").map(String::as_str), Some("v"), "{cfg}");
    assert_eq!(env_map(&cfg)["PATH"], "/usr/bin", "{cfg}");
    assert_eq!(c["Labels"], json!({"a": "1", "b c": "d e"}), "{cfg}");
    assert_eq!(c["WorkingDir"], "/app/sub", "{cfg}");
    assert_eq!(c["User"], "1000:1000", "{cfg}");
    assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}), "{cfg}");
    assert_eq!(c["Volumes"], json!({"/data": {}, "/logs": {}}), "{cfg}");
    assert_eq!(c["StopSignal"], "SIGINT", "{cfg}");
    assert_eq!(c["Healthcheck"]["Test"], json!(["CMD", "/bin/check", "-q"]), "{cfg}");
    assert_eq!(c["Healthcheck"]["Interval"], json!(5_000_000_000u64), "{cfg}");
    assert_eq!(c["Healthcheck"]["Retries"], json!(3), "{cfg}");
    assert_eq!(c["OnBuild"], json!(["COPY x /x"]), "{cfg}");
    // CMD came before SHELL: it keeps the default shell.
    assert_eq!(c["Cmd"], json!(["/bin/sh", "-c", "echo hi"]), "{cfg}");
    // An ENTRYPOINT after a CMD in the same stage keeps that CMD.
    assert_eq!(c["Entrypoint"], json!(["/bin/app", "--flag"]), "{cfg}");
    assert_eq!(c["Shell"], json!(["/bin/bash", "-eu", "-c"]), "{cfg}");
    assert!(b.exists("app/sub/a.txt"), "{}", sorted_tree(&b));
    assert_eq!(cfg["architecture"].as_str().map(str::is_empty), Some(false), "{cfg}");
    assert_eq!(cfg["os"], "linux", "{cfg}");
    assert_eq!(cfg["rootfs"]["type"], "layers", "{cfg}");
    // WORKDIR /app, WORKDIR sub (each creates its directory) and COPY made layers.
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().map(Vec::len), Some(3), "{cfg}");

    // History: one entry per instruction after FROM; only WORKDIR and COPY made layers.
    let hist = cfg["history"].as_array().unwrap();
    let got: Vec<(String, bool)> = hist
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap_or("").to_owned(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(got.len(), 14, "{got:#?}");
    for (i, (by, empty)) in got.iter().enumerate() {
        let layer = by.starts_with("COPY a.txt") || by.starts_with("WORKDIR");
        assert_eq!(*empty, !layer, "history[{i}] {by:?}: {got:#?}");
    }
    assert!(got[0].0.starts_with("ENV PATH=/usr/bin"), "{got:#?}");
    assert!(got[13].0.starts_with("COPY a.txt ."), "{got:#?}");
    // As BuildKit: the resolved directory.
    assert_eq!(got[3].0, "WORKDIR /app/sub", "{got:#?}");
    // The manifest lists exactly the layers of the rootfs.
    assert_eq!(b.manifest()["layers"].as_array().map(Vec::len), Some(3));
}

#[test]
fn workdir_creates_its_directory_owned_by_user() {
    let env = Env::new(
        "FROM scratch\n\
         COPY a.txt /existing/a.txt\n\
         WORKDIR /existing\n\
         USER 1000:1001\n\
         WORKDIR deep/er\n",
        &[("a.txt", "A")],
    );
    let b = env.build_ok("out", &[]);
    let t = sorted_tree(&b);
    assert!(t.contains("existing/deep: dir 755") && t.contains("existing/deep/er: dir 755"), "{t}");
    let cfg = b.config();
    assert_eq!(cfg["config"]["WorkingDir"], "/existing/deep/er", "{cfg}");
    // The existing directory needed no layer; the new ones one.
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().map(Vec::len), Some(2), "{cfg}");
    let hist = cfg["history"].as_array().unwrap();
    assert_eq!(hist[1]["empty_layer"], true, "{cfg}");
    assert_eq!(hist[3]["empty_layer"], Value::Null, "{cfg}");
    if strata_layer::apply::is_root() {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(b.fs().join("existing/deep/er")).unwrap();
        assert_eq!((md.uid(), md.gid()), (1000, 1001));
        let md = std::fs::metadata(b.fs().join("existing")).unwrap();
        assert_eq!((md.uid(), md.gid()), (0, 0));
    }
    // A rebuild is served from the cache, with the same digest.
    let again = env.build_ok("again", &[]);
    assert_eq!(build_util::executed_steps(&again.log), Vec::<String>::new(), "{}", again.log);
    assert_eq!(again.digest(), b.digest());

    let env = Env::new("FROM scratch\nCOPY a.txt /f\nWORKDIR /f/sub\n", &[("a.txt", "A")]);
    let o = env.build(&[]);
    let s = common::text(&o);
    assert_eq!(o.status.code(), Some(1), "{s}");
    assert!(s.contains("Dockerfile:3") && s.contains("/f exists and is not a directory"), "{s}");
}

#[test]
fn shell_form_uses_the_current_shell_and_entrypoint_resets_inherited_cmd() {
    let env = Env::new(
        "FROM scratch AS base\n\
         CMD [\"base-cmd\"]\n\
         FROM base\n\
         SHELL [\"/bin/ash\", \"-c\"]\n\
         ENTRYPOINT run me\n\
         HEALTHCHECK NONE\n",
        &[],
    );
    let b = env.build_ok("out", &[]);
    let cfg = b.config();
    let c = &cfg["config"];
    assert_eq!(c["Entrypoint"], json!(["/bin/ash", "-c", "run me"]), "{cfg}");
    // ENTRYPOINT resets a CMD that came from the base stage.
    assert!(c.get("Cmd").is_none_or(Value::is_null), "{cfg}");
    assert_eq!(c["Healthcheck"]["Test"], json!(["NONE"]), "{cfg}");
}

#[test]
fn multistage_target_builds_only_what_it_needs() {
    let df = "FROM scratch AS unused\n\
              COPY not-in-context.txt /\n\
              FROM scratch AS first\n\
              COPY a.txt /a.txt\n\
              FROM first AS second\n\
              COPY b.txt /b.txt\n\
              FROM scratch AS final\n\
              COPY --from=second /a.txt /from-second.txt\n\
              COPY --from=1 /a.txt /from-index.txt\n\
              COPY --from=second / /all/\n";
    let env = Env::new(df, &[("a.txt", "A"), ("b.txt", "B")]);
    let b = env.build_ok("t", &["--target", "second"]);
    let t = sorted_tree(&b);
    assert!(b.exists("a.txt") && b.exists("b.txt"), "{t}");
    assert!(!b.exists("from-second.txt"), "{t}");
    assert!(!b.log.contains("[unused") && !b.log.contains("[final"), "{}", b.log);
    assert_eq!(b.config()["rootfs"]["diff_ids"].as_array().map(Vec::len), Some(2));

    let b = env.build_ok("all", &[]);
    let t = sorted_tree(&b);
    assert!(!b.log.contains("[unused"), "{}", b.log);
    assert_eq!(b.read("from-second.txt"), "A", "{t}");
    assert_eq!(b.read("from-index.txt"), "A", "{t}");
    assert_eq!(b.read("all/a.txt"), "A", "{t}");
    assert_eq!(b.read("all/b.txt"), "B", "{t}");
    assert!(!b.exists("b.txt"), "{t}");
    // `--target` names are case-insensitive in Docker.
    let o = env.build(&["--target", "SECOND"]);
    assert!(o.status.success(), "{}", common::text(&o));
}

#[test]
fn copy_chmod_chown_and_heredoc() {
    let env = Env::new(
        "FROM scratch\n\
         COPY --chmod=640 a.txt /m640\n\
         COPY --chmod=755 dir /x/\n\
         COPY --chown=1000:2000 a.txt /owned\n\
         COPY --chown=33 a.txt /owned33\n\
         COPY <<EOF /greeting.txt\n\
         hello\n\
         world\n\
         EOF\n\
         COPY <<one.txt <<two.txt /here/\n\
         1\n\
         one.txt\n\
         2\n\
         two.txt\n",
        &[("a.txt", "A"), ("dir/f", "F")],
    );
    let b = env.build_ok("out", &[]);
    let t = sorted_tree(&b);
    assert!(t.contains(&file_line("m640", 0o640, "A")), "{t}");
    assert!(t.contains(&file_line("x/f", 0o755, "F")), "{t}");
    assert!(t.contains(&file_line("greeting.txt", 0o644, "hello\nworld\n")), "{t}");
    assert!(t.contains(&file_line("here/one.txt", 0o644, "1\n")), "{t}");
    assert!(t.contains(&file_line("here/two.txt", 0o644, "2\n")), "{t}");
    if strata_layer::apply::is_root() {
        use std::os::unix::fs::MetadataExt;
        let md = |p: &str| std::fs::metadata(b.fs().join(p)).unwrap();
        assert_eq!((md("owned").uid(), md("owned").gid()), (1000, 2000));
        assert_eq!((md("owned33").uid(), md("owned33").gid()), (33, 33));
        assert_eq!((md("m640").uid(), md("m640").gid()), (0, 0));
    } else {
        eprintln!("skipped ownership checks: not root");
    }
}

/// A tar.gz made by the system tar (an independent producer).
fn make_tgz(dir: &std::path::Path, name: &str) {
    let src = dir.join("tgz-src");
    common::write_files(&src, &[("pkg/bin/tool", "#!/bin/sh\n"), ("pkg/README", "read me\n")]);
    let st = std::process::Command::new("tar")
        .arg("-czf")
        .arg(dir.join(name))
        .arg("-C")
        .arg(&src)
        .arg("pkg")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_dir_all(src).unwrap();
}

#[test]
fn add_extracts_local_archives_and_copies_plain_files() {
    let env = Env::new(
        "FROM scratch\nADD pkg.tar.gz /opt/\nADD plain.txt /p.txt\n",
        &[("plain.txt", "P")],
    );
    make_tgz(&env.ctx, "pkg.tar.gz");
    let b = env.build_ok("out", &[]);
    let t = sorted_tree(&b);
    assert_eq!(b.read("opt/pkg/README"), "read me\n", "{t}");
    assert_eq!(b.read("opt/pkg/bin/tool"), "#!/bin/sh\n", "{t}");
    assert!(!b.exists("opt/pkg.tar.gz"), "{t}");
    assert_eq!(b.read("p.txt"), "P", "{t}");
}

#[test]
fn add_url_is_a_clear_not_supported_error() {
    let env = Env::new("FROM scratch\nADD https://example.com/file.txt /f\n", &[]);
    let o = env.build(&[]);
    let s = common::text(&o);
    assert!(matches!(o.status.code(), Some(1 | 2)), "{s}");
    assert!(s.contains("https://example.com/file.txt") && s.contains("not supported yet"), "{s}");
    assert!(s.contains("Dockerfile:2"), "{s}");
}

struct ErrCase {
    name: &'static str,
    dockerfile: &'static str,
    args: &'static [&'static str],
    codes: &'static [i32],
    want: &'static [&'static str],
}

#[test]
fn errors_are_clear_and_have_the_right_exit_code() {
    let cases = [
        ErrCase {
            name: "syntax error names file and line",
            dockerfile: "FROM scratch\nCOPY a.txt /a\nENV\n",
            args: &[],
            codes: &[1, 2],
            want: &["Dockerfile:3", "ENV"],
        },
        ErrCase {
            name: "unknown instruction",
            dockerfile: "FROM scratch\n\nFROBNICATE now\n",
            args: &[],
            codes: &[1, 2],
            want: &["Dockerfile:3", "unknown instruction", "FROBNICATE"],
        },
        ErrCase {
            name: "instruction before FROM",
            dockerfile: "COPY a.txt /\nFROM scratch\n",
            args: &[],
            codes: &[1, 2],
            want: &["Dockerfile:1", "FROM"],
        },
        ErrCase {
            name: "missing COPY source",
            dockerfile: "FROM scratch\nCOPY /missing /x\n",
            args: &[],
            codes: &[1],
            want: &["\"/missing\": not found", "Dockerfile:2"],
        },
        ErrCase {
            name: "wildcard matching nothing",
            dockerfile: "FROM scratch\nCOPY *.nothing /x/\n",
            args: &[],
            codes: &[1],
            want: &["Dockerfile:2", "*.nothing", "not found"],
        },
        ErrCase {
            name: "unknown stage in --from",
            dockerfile: "FROM scratch\nCOPY --from=nosuchstage /a /a\n",
            args: &[],
            codes: &[1, 2],
            want: &["nosuchstage"],
        },
        ErrCase {
            name: "stage cycle through --from",
            dockerfile: "FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nCOPY --from=a /x /y\n",
            args: &[],
            codes: &[1, 2],
            want: &["circular dependency", "b -> a -> b"],
        },
        ErrCase {
            name: "unknown --target",
            dockerfile: "FROM scratch AS one\nCOPY a.txt /\n",
            args: &["--target", "two"],
            codes: &[1, 2],
            want: &["\"two\""],
        },
        ErrCase {
            name: "empty Dockerfile",
            dockerfile: "# only a comment\n\n",
            args: &[],
            codes: &[1, 2],
            want: &["no instructions"],
        },
        ErrCase {
            name: "--push",
            dockerfile: "FROM scratch\n",
            args: &["--push"],
            codes: &[2],
            want: &["--push", "-t"],
        },
        ErrCase {
            name: "--load",
            dockerfile: "FROM scratch\n",
            args: &["--load"],
            codes: &[2],
            want: &["--load", "not supported yet"],
        },
        ErrCase {
            name: "bad --chmod",
            dockerfile: "FROM scratch\nCOPY --chmod=rwx a.txt /\n",
            args: &[],
            codes: &[1, 2],
            want: &["Dockerfile:2", "--chmod=rwx"],
        },
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let env = Env::new(c.dockerfile, &[("a.txt", "A")]);
        let o = env.build(c.args);
        let s = common::text(&o);
        let code = o.status.code().unwrap_or(-1);
        let missing: Vec<_> = c.want.iter().filter(|w| !s.contains(**w)).collect();
        if !c.codes.contains(&code) || !missing.is_empty() || s.contains("panicked") {
            failures.push(format!(
                "{}: exit {code} (want {:?}), missing {missing:?}:\n{s}",
                c.name, c.codes
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n----\n"));
}

#[test]
fn missing_context_dir_and_dockerfile_are_usage_errors() {
    let t = tempfile::tempdir().unwrap();
    let o = common::strata(&t.path().join("state"))
        .args(["build", "--progress", "plain"])
        .arg(t.path().join("nope"))
        .output()
        .unwrap();
    let s = common::text(&o);
    assert_eq!(o.status.code(), Some(2), "{s}");
    assert!(s.contains("nope") && s.contains("not found"), "{s}");

    std::fs::create_dir(t.path().join("ctx")).unwrap();
    let o = common::strata(&t.path().join("state"))
        .args(["build", "--progress", "plain"])
        .arg(t.path().join("ctx"))
        .output()
        .unwrap();
    let s = common::text(&o);
    assert_eq!(o.status.code(), Some(2), "{s}");
    assert!(s.contains("Dockerfile") && s.contains("no such file"), "{s}");
}

#[test]
fn oci_output_is_accepted_by_umoci_and_skopeo() {
    let env = Env::new(
        "FROM scratch\nCOPY a.txt /a.txt\nCOPY dir /dir/\nCMD [\"/a\"]\n",
        &[("a.txt", "A"), ("dir/b", "B")],
    );
    let b = env.build_ok("out", &["-t", "demo:v1"]);
    let index = build_util::read_json(&b.oci().join("index.json"));
    assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "v1");
    match which("skopeo") {
        Some(skopeo) => {
            let o = std::process::Command::new(skopeo)
                .arg("inspect")
                .arg(format!("oci:{}:v1", b.oci().display()))
                .output()
                .unwrap();
            let s = common::text(&o);
            assert!(o.status.success(), "skopeo inspect: {s}");
            assert!(s.contains(&b.digest()), "{s}");
        }
        None => eprintln!("skipped: skopeo not installed"),
    }
    match which("umoci") {
        Some(umoci) => {
            let bundle = env.path("bundle");
            let o = std::process::Command::new(umoci)
                .args(["unpack", "--rootless", "--image"])
                .arg(format!("{}:v1", b.oci().display()))
                .arg(&bundle)
                .output()
                .unwrap();
            assert!(o.status.success(), "umoci unpack: {}", common::text(&o));
            assert_eq!(std::fs::read_to_string(bundle.join("rootfs/a.txt")).unwrap(), "A");
            assert_eq!(std::fs::read_to_string(bundle.join("rootfs/dir/b")).unwrap(), "B");
        }
        None => eprintln!("skipped: umoci not installed"),
    }
}
