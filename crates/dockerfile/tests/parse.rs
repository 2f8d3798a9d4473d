//! Parsing tables: each instruction, continuations, directives, heredocs, errors.

use strata_dockerfile::*;

fn only(src: &str) -> InstructionKind {
    let df = parse("Dockerfile", format!("FROM scratch\n{src}\n").as_bytes())
        .unwrap_or_else(|e| panic!("{src}: {e}"));
    df.stages[0].instructions[0].kind.clone()
}

fn err(src: &str) -> String {
    parse("Dockerfile", src.as_bytes()).expect_err(src).to_string()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn instruction_table() {
    use InstructionKind as K;
    let kv = |k: &str, v: &str, legacy| KeyValue { key: k.into(), value: v.into(), legacy };
    let cases: Vec<(&str, InstructionKind)> = vec![
        (
            "ARG A B=2 C=\"x y\"",
            K::Arg(vec![
                ArgDecl { name: "A".into(), default: None },
                ArgDecl { name: "B".into(), default: Some("2".into()) },
                ArgDecl { name: "C".into(), default: Some("\"x y\"".into()) },
            ]),
        ),
        ("ENV A=1 B=\"x y\"", K::Env(vec![kv("A", "1", false), kv("B", "\"x y\"", false)])),
        ("ENV A x y", K::Env(vec![kv("A", "x y", true)])),
        ("label a=b", K::Label(vec![kv("a", "b", false)])),
        ("WORKDIR /a b", K::Workdir("/a b".into())),
        ("USER app:app", K::User("app:app".into())),
        ("CMD [\"a\", \"b\"]", K::Cmd(CommandLine::Exec(s(&["a", "b"])))),
        ("CMD echo hi", K::Cmd(CommandLine::Shell("echo hi".into()))),
        ("CMD [\"a\", ", K::Cmd(CommandLine::Shell("[\"a\",".into()))),
        ("ENTRYPOINT [\"/bin/app\"]", K::Entrypoint(CommandLine::Exec(s(&["/bin/app"])))),
        ("EXPOSE 8080 80/udp", K::Expose(s(&["80/udp", "8080"]))),
        ("VOLUME /a /b", K::Volume(s(&["/a", "/b"]))),
        ("VOLUME [\"/a\"]", K::Volume(s(&["/a"]))),
        ("STOPSIGNAL SIGTERM", K::StopSignal("SIGTERM".into())),
        ("SHELL [\"bash\", \"-c\"]", K::Shell(s(&["bash", "-c"]))),
        ("HEALTHCHECK NONE", K::Healthcheck(Healthcheck::None)),
        (
            "HEALTHCHECK --interval=5s --retries=3 CMD curl -f x",
            K::Healthcheck(Healthcheck::Cmd {
                command: CommandLine::Shell("curl -f x".into()),
                interval: Some(std::time::Duration::from_secs(5)),
                timeout: None,
                start_period: None,
                start_interval: None,
                retries: Some(3),
            }),
        ),
        ("ONBUILD RUN echo hi", K::Onbuild("RUN echo hi".into())),
        ("MAINTAINER me <me@x>", K::Maintainer("me <me@x>".into())),
        (
            "COPY --from=b --chown=1:1 --chmod=644 --link --parents --exclude=*.md --exclude=x a b /d/",
            K::Copy(Copy {
                sources: s(&["a", "b"]),
                inline: vec![],
                dest: "/d/".into(),
                from: Some("b".into()),
                chown: Some("1:1".into()),
                chmod: Some("644".into()),
                link: true,
                parents: true,
                exclude: s(&["*.md", "x"]),
            }),
        ),
        (
            "ADD --keep-git-dir=false --checksum=sha256:ab https://x/y /y",
            K::Add(Add {
                sources: s(&["https://x/y"]),
                inline: vec![],
                dest: "/y".into(),
                chown: None,
                chmod: None,
                link: false,
                keep_git_dir: Some(false),
                checksum: Some("sha256:ab".into()),
                unpack: None,
                exclude: vec![],
            }),
        ),
        (
            "COPY [\"a b\", \"/c\"]",
            K::Copy(Copy {
                sources: s(&["a b"]),
                inline: vec![],
                dest: "/c".into(),
                from: None,
                chown: None,
                chmod: None,
                link: false,
                parents: false,
                exclude: vec![],
            }),
        ),
        (
            "RUN --mount=type=cache,target=/c --network=none --security=insecure make",
            K::Run(Run {
                command: CommandLine::Shell("make".into()),
                heredocs: vec![],
                mounts: s(&["type=cache,target=/c"]),
                network: Some("none".into()),
                security: Some("insecure".into()),
            }),
        ),
        (
            "run [\"ls\"]",
            K::Run(Run {
                command: CommandLine::Exec(s(&["ls"])),
                heredocs: vec![],
                mounts: vec![],
                network: None,
                security: None,
            }),
        ),
    ];
    for (src, want) in cases {
        assert_eq!(only(src), want, "{src}");
    }
}

#[test]
fn from_forms() {
    let df = parse("Dockerfile", b"ARG V=3\nfrom --platform=$BUILDPLATFORM alpine:$V as Build\n")
        .unwrap();
    assert_eq!(df.global_args.len(), 1);
    let f = &df.stages[0].from;
    assert_eq!(f.image, "alpine:$V");
    assert_eq!(f.name.as_deref(), Some("build"));
    assert_eq!(f.platform.as_deref(), Some("$BUILDPLATFORM"));
}

#[test]
fn error_table() {
    let cases = [
        ("FROM a\nRUN --bogus x\n", "Dockerfile:2: unknown flag: bogus"),
        ("FROM a\nCMD --help\n", "unknown flag: help"),
        ("FROM a\nFOO bar\n", "Dockerfile:2: unknown instruction: FOO"),
        ("FROM a\nCOPY x\n", "COPY requires at least two arguments"),
        ("FROM a\nRUN [\"a\", 1]\n", "arrays must be comprised of strings only"),
        ("FROM a\nSHELL sh -c\n", "SHELL requires the arguments to be in JSON form"),
        ("FROM a b\n", "FROM requires either one or three arguments"),
        ("FROM a AS 1x\n", "invalid name for build stage"),
        ("FROM a\nENV A\n", "ENV must have two arguments"),
        ("FROM a\nENV A=1 B\n", "can't find = in \"B\""),
        ("FROM a\nCOPY --link=maybe a b\n", "expecting boolean value for flag link"),
        ("FROM a\nCOPY --from a b\n", "missing a value on flag: from"),
        ("FROM a\nCOPY --from=a --from=b a b\n", "duplicate flag specified: from"),
        ("FROM a\nRUN --network=bridge x\n", "invalid network mode"),
        ("FROM a\nRUN --mount=from=$X,target=/x x\n", "doesn't support variable expansion"),
        ("FROM a\nHEALTHCHECK --interval=5 CMD x\n", "missing unit"),
        ("FROM a\nHEALTHCHECK CMD\n", "Missing command after HEALTHCHECK CMD"),
        ("FROM a\nHEALTHCHECK --interval=1s NONE\n", "unknown flag: interval"),
        ("FROM a\nONBUILD ONBUILD RUN x\n", "Chaining ONBUILD"),
        ("FROM a\nONBUILD FROM x\n", "FROM isn't allowed as an ONBUILD trigger"),
        ("FROM a\nRUN <<EOF\nno end\n", "Dockerfile:2: unterminated heredoc"),
        ("# escape=x\nFROM a\n", "invalid escape token"),
        ("# escape=\\\n# escape=`\nFROM a\n", "only one escape parser directive"),
        ("RUN x\nFROM a\n", "no build stage in current context"),
        ("# just a comment\n\n", "the Dockerfile has no instructions"),
        ("", "the Dockerfile has no instructions"),
        ("ARG A=1\n", "no FROM instruction"),
    ];
    for (src, want) in cases {
        let e = err(src);
        assert!(e.contains(want), "{src:?}: got {e}");
    }
}

#[test]
fn continuations_and_comments() {
    let src = "FROM a\nRUN echo a \\\n# a comment inside\n\n    && echo b \\\n  c\nRUN x\n";
    let df = parse("Dockerfile", src.as_bytes()).unwrap();
    let ins = &df.stages[0].instructions;
    assert_eq!(ins[0].original, "RUN echo a     && echo b   c");
    assert_eq!((ins[0].line, ins[0].end_line), (2, 6));
    assert_eq!(ins[1].line, 7);
    // An escaped escape char at end of line is not a continuation.
    let df = parse("Dockerfile", b"FROM a\nRUN echo \\\\\nRUN y\n").unwrap();
    assert_eq!(df.stages[0].instructions.len(), 2);
    // Comments only at line start (after whitespace); `#` later is text.
    let df = parse("Dockerfile", b"  # c\nFROM a\nRUN echo # not a comment\n").unwrap();
    assert_eq!(df.stages[0].instructions[0].original, "RUN echo # not a comment");
}

#[test]
fn directives_and_backtick_escape() {
    let src = "# syntax=docker/dockerfile:1\n# escape=`\nFROM a\nRUN dir c:\\ `\n  && echo hi\nCOPY a\\b c:\\d\n";
    let df = parse("Dockerfile", src.as_bytes()).unwrap();
    assert_eq!(df.directives.escape, '`');
    assert_eq!(df.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(df.stages[0].instructions[0].original, "RUN dir c:\\   && echo hi");
    // Directives stop at the first non-directive line: a later `# escape` is a comment.
    let df = parse("Dockerfile", b"# hello\n# escape=`\nFROM a\nRUN a \\\n b\n").unwrap();
    assert_eq!(df.directives.escape, '\\');
    assert_eq!(df.stages[0].instructions[0].original, "RUN a  b");
    // Also after an empty line? BuildKit: an empty line ends directive scanning.
    let df = parse("Dockerfile", b"\n# escape=`\nFROM a\n").unwrap();
    assert_eq!(df.directives.escape, '\\');
}

#[test]
fn heredocs() {
    let src = "FROM a\nRUN <<EOF\necho $HOME\nEOF\nRUN <<-\"X\" bash\n\t\techo hi\n\tX\nCOPY <<one <<'two' /dest/\n1 $A\none\n2 $A\ntwo\nRUN cat <<A <<B\na\nA\nb\nB\nRUN echo after\n";
    let df = parse("Dockerfile", src.as_bytes()).unwrap();
    let ins = &df.stages[0].instructions;
    let InstructionKind::Run(r) = &ins[0].kind else { panic!() };
    assert_eq!(r.command, CommandLine::Shell("<<EOF".into()));
    assert_eq!(r.heredocs[0].content, "echo $HOME\n");
    assert!(r.heredocs[0].expand);
    assert_eq!((ins[0].line, ins[0].end_line), (2, 4));
    let InstructionKind::Run(r) = &ins[1].kind else { panic!() };
    assert!(r.heredocs[0].chomp && !r.heredocs[0].expand);
    assert_eq!(r.heredocs[0].body(), "echo hi\n");
    let InstructionKind::Copy(c) = &ins[2].kind else { panic!() };
    assert!(c.sources.is_empty());
    assert_eq!(c.dest, "/dest/");
    assert_eq!(c.inline.len(), 2);
    assert_eq!((c.inline[0].name.as_str(), c.inline[0].content.as_str()), ("one", "1 $A\n"));
    assert!(c.inline[0].expand && !c.inline[1].expand);
    let InstructionKind::Run(r) = &ins[3].kind else { panic!() };
    assert_eq!(r.heredocs.iter().map(|h| h.content.as_str()).collect::<Vec<_>>(), ["a\n", "b\n"]);
    assert_eq!(ins[4].original, "RUN echo after");
    // JSON form never has heredocs.
    let df = parse("Dockerfile", b"FROM a\nRUN [\"echo\", \"<<EOF\"]\nRUN x\n").unwrap();
    assert_eq!(df.stages[0].instructions.len(), 2);
}

#[test]
fn no_panics_on_garbage() {
    let inputs: &[&[u8]] = &[
        b"\xff\xfe\x00",
        b"FROM",
        b"FROM a\n\\",
        b"FROM a\nRUN \\",
        b"FROM a\nCOPY <<",
        b"FROM a\nCOPY <<E <<E\n",
        b"FROM a\nHEALTHCHECK --retries=-1 CMD x",
        b"FROM a\nHEALTHCHECK --timeout=99999999999h CMD x",
        b"FROM a\nRUN --mount=\"\n",
        b"FROM a\nENV \"\n",
        b"FROM a\nARG =x",
        b"FROM a\nONBUILD\n",
        b"\xef\xbb\xbfFROM a",
        b"FROM a\nLABEL \\",
        b"FROM a\nEXPOSE ${",
        b"FROM a\nRUN --=x y",
    ];
    for i in inputs {
        let _ = parse("Dockerfile", i);
    }
    let deep = format!("FROM a\nONBUILD {}RUN x\n", "ONBUILD ".repeat(50_000));
    assert!(parse("Dockerfile", deep.as_bytes()).is_err());
}
