//! Every shared BuildKit fixture Dockerfile parses and resolves.

use std::path::Path;

use strata_dockerfile::*;

#[test]
fn buildkit_fixtures_parse() {
    let root = Path::new("/work/shared/fixtures/buildkit");
    let Ok(dirs) = std::fs::read_dir(root) else {
        // The shared fixtures are not part of the repository; nothing to check without them.
        return;
    };
    let mut seen = 0;
    for d in dirs.flatten() {
        let path = d.path().join("Dockerfile");
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let df = parse(&path.display().to_string(), &bytes).unwrap();
        let plan = resolve(&df, &BuildOptions::default()).unwrap();
        let target = plan.target().unwrap();
        assert_eq!(target.base, Base::Scratch, "{}", path.display());
        for s in &plan.stages {
            let mut scope = StageScope::new(&df, &plan, &BuildOptions::default(), &[]);
            for ins in &df.stages[s.index].instructions {
                scope.expand(ins).unwrap();
            }
        }
        seen += 1;
    }
    assert!(seen >= 7, "expected the fixture Dockerfiles, saw {seen}");
}

#[test]
fn perf_fixture_shape() {
    let Ok(bytes) = std::fs::read("/work/shared/fixtures/buildkit/perf/Dockerfile") else { return };
    let df = parse("perf/Dockerfile", &bytes).unwrap();
    let plan = resolve(&df, &BuildOptions::default()).unwrap();
    let names: Vec<_> = plan.stages.iter().map(|s| s.display_name.as_str()).collect();
    assert_eq!(names, ["gen", "stage-1"]);
    assert_eq!(plan.stages[0].base, Base::Image("base".into()));
    assert_eq!(df.stages[1].instructions[1].original, "COPY --from=gen /gen/ /gen/");
}
