//! The build cache as users see it: what a rebuild re-runs, and when image digests match.

mod build_util;
mod common;

use build_util::{Env, cached_steps, executed_steps};

const DF: &str = "FROM scratch\n\
                  COPY a.txt /a.txt\n\
                  ENV STEP=two\n\
                  COPY b.txt /b.txt\n\
                  COPY c.txt /c.txt\n";

fn files() -> Vec<(&'static str, &'static str)> {
    vec![("a.txt", "aaaa"), ("b.txt", "bbbb"), ("c.txt", "cccc")]
}

#[test]
fn unchanged_rebuild_is_all_cached_with_the_same_digest() {
    let env = Env::new(DF, &files());
    let first = env.build_ok("one", &[]);
    assert_eq!(executed_steps(&first.log).len(), 3, "{}", first.log);
    assert!(cached_steps(&first.log).is_empty(), "{}", first.log);
    let second = env.build_ok("two", &[]);
    assert_eq!(cached_steps(&second.log).len(), 3, "{}", second.log);
    assert!(executed_steps(&second.log).is_empty(), "{}", second.log);
    assert_eq!(first.digest(), second.digest());
    assert_eq!(first.tree(), second.tree());
}

#[test]
fn a_changed_file_reruns_its_step_and_the_later_ones() {
    let env = Env::new(DF, &files());
    let first = env.build_ok("one", &[]);
    std::fs::write(env.ctx.join("b.txt"), "changed b").unwrap();
    let second = env.build_ok("two", &[]);
    let cached = cached_steps(&second.log);
    let ran = executed_steps(&second.log);
    assert_eq!(cached.len(), 1, "{}", second.log);
    assert!(cached[0].ends_with("COPY a.txt /a.txt"), "{cached:?}");
    assert_eq!(ran.len(), 2, "{}", second.log);
    assert!(
        ran[0].ends_with("COPY b.txt /b.txt") && ran[1].ends_with("COPY c.txt /c.txt"),
        "{ran:?}"
    );
    assert_eq!(second.read("b.txt"), "changed b");
    assert_ne!(first.digest(), second.digest());
    // A file no step reads does not invalidate anything.
    std::fs::write(env.ctx.join("unused.txt"), "new").unwrap();
    let third = env.build_ok("three", &[]);
    assert_eq!(cached_steps(&third.log).len(), 3, "{}", third.log);
    assert_eq!(third.digest(), second.digest());
}

#[test]
fn no_cache_reruns_every_step() {
    let env = Env::new(DF, &files());
    env.build_ok("one", &[]);
    let second = env.build_ok("two", &["--no-cache"]);
    assert!(cached_steps(&second.log).is_empty(), "{}", second.log);
    assert_eq!(executed_steps(&second.log).len(), 3, "{}", second.log);
    // The result is the same filesystem.
    assert_eq!(second.read("c.txt"), "cccc");
}

#[test]
fn source_date_epoch_makes_fresh_builds_reproducible() {
    let env = Env::new(
        "FROM scratch\nCOPY a.txt /a.txt\nCOPY dir /dir/\nLABEL x=y\nCOPY c.txt /c.txt\n",
        &[("a.txt", "aaaa"), ("dir/one", "1"), ("dir/sub/two", "2"), ("c.txt", "cccc")],
    );
    let run = |state: &str, out: &str| {
        let dir = env.path(out);
        let o = common::strata(&env.path(state))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", "--progress", "plain", "--metadata-file"])
            .arg(dir.join("md.json"))
            .arg("-o")
            .arg(format!("type=oci,dest={},tar=false", dir.join("oci").display()))
            .arg(&env.ctx)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", common::text(&o));
        let md = build_util::read_json(&dir.join("md.json"));
        (
            md["containerimage.digest"].as_str().unwrap().to_owned(),
            build_util::oci_config(&dir.join("oci")),
        )
    };
    let (d1, cfg1) = run("state1", "o1");
    // A second, fresh state directory: nothing can be reused, everything is rebuilt.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (d2, _) = run("state2", "o2");
    assert_eq!(d1, d2, "same inputs + SOURCE_DATE_EPOCH must give the same image digest");
    assert_eq!(cfg1["created"], "2023-11-14T22:13:20Z", "{cfg1}");
    for h in cfg1["history"].as_array().unwrap() {
        assert_eq!(h["created"], "2023-11-14T22:13:20Z", "{cfg1}");
    }
}

#[test]
fn racily_clean_edit_is_not_served_from_the_cache() {
    let env = Env::new(DF, &files());
    env.build_ok("one", &[]);
    // Same size, same mtime, different bytes, right after the build recorded its
    // checksums: only a cache that trusts (size, mtime) alone would miss this.
    let p = env.ctx.join("b.txt");
    let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
    std::fs::write(&p, "BBBB").unwrap();
    std::fs::File::options().write(true).open(&p).unwrap().set_modified(mtime).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), mtime);
    let second = env.build_ok("two", &[]);
    let ran = executed_steps(&second.log);
    assert!(ran.iter().any(|s| s.ends_with("COPY b.txt /b.txt")), "{}", second.log);
    assert_eq!(second.read("b.txt"), "BBBB");
}

#[test]
fn changed_build_arg_reruns_only_dependent_steps() {
    let env = Env::new(
        "FROM scratch\nCOPY a.txt /a.txt\nARG DEST=/x\nCOPY b.txt ${DEST}/b.txt\n",
        &files(),
    );
    env.build_ok("one", &[]);
    let second = env.build_ok("two", &["--build-arg", "DEST=/y"]);
    assert_eq!(cached_steps(&second.log).len(), 1, "{}", second.log);
    assert_eq!(executed_steps(&second.log).len(), 1, "{}", second.log);
    assert!(second.exists("y/b.txt") && !second.exists("x"), "{:?}", second.tree());
}
