//! ARG scoping, expansion through StageScope, and stage selection.

use std::collections::BTreeMap;

use strata_dockerfile::*;

fn opts(args: &[(&str, &str)], target: Option<&str>) -> BuildOptions {
    BuildOptions {
        build_args: args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        target: target.map(str::to_string),
        platform_args: BTreeMap::from([("TARGETARCH".to_string(), "amd64".to_string())]),
    }
}

/// Expands every instruction of the target stage and returns them.
fn run_target(src: &str, o: &BuildOptions) -> Vec<Instruction> {
    let df = parse("Dockerfile", src.as_bytes()).unwrap();
    let plan = resolve(&df, o).unwrap();
    let t = plan.target().unwrap().index;
    let mut scope = StageScope::new(&df, &plan, o, &[]);
    df.stages[t].instructions.iter().map(|i| scope.expand(i).unwrap()).collect()
}

fn workdirs(ins: &[Instruction]) -> Vec<String> {
    ins.iter()
        .filter_map(|i| match &i.kind {
            InstructionKind::Workdir(w) => Some(w.clone()),
            _ => None,
        })
        .collect()
}

/// (Dockerfile, build args, expected WORKDIR values of the target stage).
type ScopeCase<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);

#[test]
fn arg_scoping_table() {
    let cases: &[ScopeCase] = &[
        // Global ARG is visible in FROM only, not in the stage.
        ("ARG V=1\nFROM a\nWORKDIR /x$V\n", &[], &["/x"]),
        // Re-declaring inherits the global default.
        ("ARG V=1\nFROM a\nARG V\nWORKDIR /x$V\n", &[], &["/x1"]),
        // Build arg overrides the global default, also when inherited.
        ("ARG V=1\nFROM a\nARG V\nWORKDIR /x$V\n", &[("V", "9")], &["/x9"]),
        // Stage ARG default, overridden by build arg.
        ("FROM a\nARG W=2\nWORKDIR /$W\n", &[], &["/2"]),
        ("FROM a\nARG W=2\nWORKDIR /$W\n", &[("W", "3")], &["/3"]),
        // Predefined platform args need ARG in a stage.
        (
            "FROM a\nWORKDIR /$TARGETARCH\nARG TARGETARCH\nWORKDIR /$TARGETARCH\n",
            &[],
            &["/", "/amd64"],
        ),
        // ENV values: quotes removed, later ENV sees earlier ones.
        ("FROM a\nENV A=\"x y\" B=z\nENV C=${A}-${B:-no}\nWORKDIR /$C\n", &[], &["/x y-z"]),
        // Legacy ENV, ARG default expanding an ENV.
        ("FROM a\nENV P /opt\nARG D=$P/bin\nWORKDIR $D\n", &[], &["/opt/bin"]),
        // Escaped dollar and single quotes stay literal.
        ("FROM a\nENV A=1\nWORKDIR /\\$A/'$A'/\"$A\"\n", &[], &["/$A/$A/1"]),
        // Unset vs empty.
        ("FROM a\nENV E=\"\"\nWORKDIR /${E:-d}/${E-d}/${U-u}\n", &[], &["/d//u"]),
    ];
    for (src, args, want) in cases {
        let got = workdirs(&run_target(src, &opts(args, None)));
        assert_eq!(got, *want, "{src}");
    }
}

#[test]
fn from_is_expanded_with_global_scope() {
    let df = parse(
        "Dockerfile",
        b"ARG BASE=alpine\nARG TAG=3.$MINOR\nFROM --platform=linux/$TARGETARCH ${BASE}:${TAG}\n",
    )
    .unwrap();
    let plan = resolve(&df, &opts(&[("MINOR", "x")], None)).unwrap();
    assert_eq!(plan.stages[0].base, Base::Image("alpine:3.".into()));
    assert_eq!(plan.stages[0].platform.as_deref(), Some("linux/amd64"));
    assert_eq!(plan.unused_build_args, ["MINOR"]);
    let plan = resolve(&df, &opts(&[("TAG", "edge"), ("HTTP_PROXY", "p")], None)).unwrap();
    assert_eq!(plan.stages[0].base, Base::Image("alpine:edge".into()));
    assert!(plan.unused_build_args.is_empty());
}

#[test]
fn expansion_scope_per_instruction() {
    let ins = run_target(
        "FROM a\nARG U=app\nENV D=/srv\nCOPY --chown=$U:$U <<EOF ${D}/f\nhi $U\nEOF\nUSER $U\nEXPOSE ${PORT:-80} 443\nLABEL k=$D\nRUN echo $D\n",
        &opts(&[], None),
    );
    let InstructionKind::Copy(c) = &ins[2].kind else { panic!() };
    assert_eq!(c.chown.as_deref(), Some("app:app"));
    assert_eq!(c.dest, "/srv/f");
    assert_eq!(c.inline[0].content, "hi app\n");
    assert_eq!(ins[3].kind, InstructionKind::User("app".into()));
    assert_eq!(ins[4].kind, InstructionKind::Expose(vec!["80".into(), "443".into()]));
    let InstructionKind::Run(r) = &ins[6].kind else { panic!() };
    assert_eq!(r.command, CommandLine::Shell("echo $D".into()), "RUN is not expanded");
}

#[test]
fn required_var_error_names_line() {
    let df = parse("Dockerfile", b"FROM a\n\nWORKDIR ${NOPE:?must be set}\n").unwrap();
    let o = opts(&[], None);
    let plan = resolve(&df, &o).unwrap();
    let mut scope = StageScope::new(&df, &plan, &o, &[]);
    let e = scope.expand(&df.stages[0].instructions[0]).unwrap_err().to_string();
    assert!(e.contains("Dockerfile:3") && e.contains("NOPE: must be set"), "{e}");
}

#[test]
fn mount_expansion_via_scope() {
    let df =
        parse("Dockerfile", b"FROM a\nARG ID=gomod\nRUN --mount=type=cache,id=$ID,target=/c x\n")
            .unwrap();
    let o = opts(&[], None);
    let plan = resolve(&df, &o).unwrap();
    let mut scope = StageScope::new(&df, &plan, &o, &[]);
    let ins = &df.stages[0].instructions;
    scope.expand(&ins[0]).unwrap();
    let InstructionKind::Run(r) = &ins[1].kind else { panic!() };
    let m = Mount::parse(&r.mounts[0], &scope.expander()).unwrap();
    assert_eq!(m.id.as_deref(), Some("gomod"));
}

fn order(src: &str, target: Option<&str>) -> Result<Vec<String>> {
    let df = parse("Dockerfile", src.as_bytes())?;
    let plan = resolve(&df, &opts(&[], target))?;
    Ok(plan.stages.iter().map(|s| s.display_name.clone()).collect())
}

#[test]
fn stage_selection_table() {
    let multi = "FROM alpine AS base\nFROM base AS build\nRUN make\nFROM alpine AS unused\nFROM scratch\nCOPY --from=build /o /o\n";
    assert_eq!(order(multi, None).unwrap(), ["base", "build", "stage-3"]);
    assert_eq!(order(multi, Some("BUILD")).unwrap(), ["base", "build"]);
    assert_eq!(order(multi, Some("unused")).unwrap(), ["unused"]);
    let idx = "FROM alpine\nRUN x\nFROM alpine\nFROM scratch\nCOPY --from=0 /a /a\n";
    assert_eq!(order(idx, None).unwrap(), ["stage-0", "stage-2"]);
    let mnt = "FROM alpine AS src\nFROM alpine\nRUN --mount=from=src,target=/s ls\n";
    assert_eq!(order(mnt, None).unwrap(), ["src", "stage-1"]);
    // A FROM naming a later stage is an image, not a dependency.
    let df = parse("Dockerfile", b"FROM later\nFROM alpine AS later\n").unwrap();
    let plan = resolve(&df, &opts(&[], Some("later"))).unwrap();
    assert_eq!(plan.stages.len(), 1);
    let plan = resolve(&df, &opts(&[], None)).unwrap();
    assert_eq!(plan.stages[0].base, Base::Image("alpine".into()));
}

#[test]
fn stage_errors_and_external_refs() {
    let cyc = "FROM alpine AS a\nCOPY --from=b /x /x\nFROM alpine AS b\nCOPY --from=a /y /y\n";
    let e = order(cyc, None).unwrap_err();
    assert!(matches!(e, Error::Cycle { .. }), "{e}");
    let e = order("FROM alpine AS a\n", Some("nope")).unwrap_err().to_string();
    assert!(e.contains("\"nope\"") && e.contains("a"), "{e}");
    let e = order("FROM alpine\nCOPY --from=5 /a /a\n", None).unwrap_err().to_string();
    assert!(e.contains("invalid stage index 5"), "{e}");
    let e = order("FROM alpine\nCOPY --from=$X /a /a\n", None).unwrap_err().to_string();
    assert!(e.contains("variable expansion is not supported for --from"), "{e}");

    let df = parse(
        "Dockerfile",
        b"FROM alpine\nCOPY --from=nginx:1 /a /a\nRUN --mount=from=docs,target=/d x\n",
    )
    .unwrap();
    let plan = resolve(&df, &opts(&[], None)).unwrap();
    let names: Vec<_> = plan.external_refs.iter().map(|r| (r.name.as_str(), r.line)).collect();
    assert_eq!(names, [("nginx:1", 2), ("docs", 3)]);
}
