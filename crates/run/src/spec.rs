//! The OCI runtime `config.json` of a RUN container.
//!
//! Everything security-relevant is set explicitly rather than taken from
//! oci-spec's defaults, which add a network namespace, a cgroup mount and a
//! capability set that differ from BuildKit's.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder,
    Mount as OciMount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::{DEFAULT_PATH, Network, ResolvedUser, RunError};

/// BuildKit's (and Docker's) default capability set for RUN.
pub(crate) const DEFAULT_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// runc's default masked paths (`runc spec`): host information a build must not read.
const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
    "/sys/devices/virtual/powercap",
];

/// runc's default read-only paths (`runc spec`): kernel knobs a build must not turn.
const READONLY_PATHS: [&str; 5] =
    ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// What goes into one container's config.
pub(crate) struct ConfigInput<'a> {
    pub(crate) rootfs: &'a Path,
    pub(crate) args: &'a [String],
    pub(crate) env: &'a [String],
    pub(crate) cwd: &'a str,
    pub(crate) user: &'a ResolvedUser,
    pub(crate) hostname: &'a str,
    pub(crate) network: Network,
    /// The container's cgroup, relative to the caller's own.
    pub(crate) cgroup: &'a str,
    /// Mounts after the standard ones (/etc files, user mounts, secrets).
    pub(crate) extra_mounts: Vec<OciMount>,
    /// Rootless mode: the caller's (uid, gid), mapped to the container's 0:0.
    pub(crate) rootless: Option<(u32, u32)>,
}

/// Builds the runtime spec.
pub(crate) fn build(input: ConfigInput<'_>) -> Result<Spec, RunError> {
    let caps: oci_spec::runtime::Capabilities = DEFAULT_CAPS.into_iter().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        // Empty inheritable/ambient as Docker ≥ 20.10 (CVE-2022-24769).
        .inheritable(oci_spec::runtime::Capabilities::new())
        .ambient(oci_spec::runtime::Capabilities::new())
        .build()
        .map_err(spec_err)?;

    let mut env: Vec<String> = input.env.to_vec();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }

    let mut user = UserBuilder::default().uid(input.user.uid).gid(input.user.gid);
    // Rootless: only gid 0 is mapped, and without newgidmap the kernel denies
    // setgroups(2) in the user namespace, so runc refuses any additional gids.
    let additional_gids: Vec<u32> = match input.rootless {
        Some(_) => vec![],
        None => input.user.additional_gids.clone(),
    };
    if !additional_gids.is_empty() {
        user = user.additional_gids(additional_gids);
    }
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user.build().map_err(spec_err)?)
        .args(input.args.to_vec())
        .env(env)
        .cwd(PathBuf::from(input.cwd))
        .capabilities(capabilities)
        // Like Docker: setuid binaries (sudo, su) keep working in builds.
        .no_new_privileges(false)
        .build()
        .map_err(spec_err)?;

    let mut namespaces = vec![
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
    ];
    match input.rootless {
        // Without root the container gets no cgroup of its own (as `runc spec
        // --rootless`), so there is nothing for a cgroup namespace to hide.
        Some(_) => namespaces.push(LinuxNamespaceType::User),
        // Hides the host's cgroup paths from /proc/self/cgroup.
        None => namespaces.push(LinuxNamespaceType::Cgroup),
    }
    match input.network {
        // runc brings up `lo` in a new network namespace by itself.
        Network::None => namespaces.push(LinuxNamespaceType::Network),
        Network::Host | Network::Default => {}
    }
    let namespaces = namespaces
        .into_iter()
        .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(spec_err)?;

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(MASKED_PATHS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .readonly_paths(READONLY_PATHS.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    match input.rootless {
        Some((uid, gid)) => {
            // The caller is the only id an unprivileged user namespace can map
            // (more needs newuidmap and /etc/subuid); it is the container's root.
            let map = |host: u32| {
                LinuxIdMappingBuilder::default().container_id(0u32).host_id(host).size(1u32).build()
            };
            // No resources and no cgroupsPath: an unprivileged caller cannot
            // create cgroups (runc then skips them in rootless mode). Without a
            // devices cgroup, runc bind-mounts its default devices from the host
            // instead of mknod, which a user namespace forbids.
            linux = linux
                .uid_mappings(vec![map(uid).map_err(spec_err)?])
                .gid_mappings(vec![map(gid).map_err(spec_err)?]);
        }
        None => {
            // Deny all devices; runc adds its defaults (null, zero, full, random,
            // urandom, tty, ptmx, pts) to the allow list and creates those nodes in
            // the /dev tmpfs.
            let resources = LinuxResourcesBuilder::default()
                .devices(vec![
                    LinuxDeviceCgroupBuilder::default()
                        .allow(false)
                        .access("rwm")
                        .build()
                        .map_err(spec_err)?,
                ])
                .build()
                .map_err(spec_err)?;
            linux = linux.resources(resources).cgroups_path(PathBuf::from(input.cgroup));
        }
    }
    let mut linux = linux.build().map_err(spec_err)?;
    if input.rootless.is_some() {
        // oci-spec's default is an empty resources object; runc would then still
        // set up (empty) cgroup limits, which an unprivileged caller cannot.
        linux.set_resources(None);
    }

    let mut mounts = standard_mounts(input.rootless.is_some(), input.network)?;
    mounts.extend(input.extra_mounts);

    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(input.rootfs.to_path_buf())
                .readonly(false)
                .build()
                .map_err(spec_err)?,
        )
        .hostname(input.hostname.to_owned())
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(spec_err)
}

/// /proc, a minimal /dev, read-only /sys: as `runc spec` (or `runc spec --rootless`),
/// minus the cgroup mount.
fn standard_mounts(rootless: bool, network: Network) -> Result<Vec<OciMount>, RunError> {
    // gid=5 (tty) is not mapped in a rootless user namespace, so devpts would refuse it.
    let mut devpts = vec!["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"];
    if !rootless {
        devpts.push("gid=5");
    }
    // A new sysfs instance may only be mounted by the owner of the network
    // namespace; rootless with the host network, bind the host's /sys read-only
    // instead (as `runc spec --rootless`).
    let sys = if rootless && network != Network::None {
        mount("/sys", "none", "/sys", &["rbind", "nosuid", "noexec", "nodev", "ro"])?
    } else {
        // With the host network, sysfs shows the host's interfaces; read-only
        // that is what Docker does too.
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"])?
    };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount("/dev/pts", "devpts", "devpts", &devpts)?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        sys,
    ])
}

/// One OCI mount entry.
pub(crate) fn mount(
    destination: &str,
    typ: &str,
    source: impl Into<PathBuf>,
    options: &[&str],
) -> Result<OciMount, RunError> {
    MountBuilder::default()
        .destination(PathBuf::from(destination))
        .typ(typ)
        .source(source.into())
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(spec_err)
}

fn spec_err(e: oci_spec::OciSpecError) -> RunError {
    RunError::InvalidSpec(format!("building the OCI runtime config: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_security_settings() {
        let user = ResolvedUser { uid: 1, gid: 2, additional_gids: vec![3] };
        let args = vec!["/bin/true".to_string()];
        let spec = build(ConfigInput {
            rootfs: Path::new("/r"),
            args: &args,
            env: &["A=b".to_string()],
            cwd: "/w",
            user: &user,
            hostname: "h",
            network: Network::Host,
            cgroup: "c",
            extra_mounts: vec![],
            rootless: None,
        })
        .unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["mount", "pid", "uts", "ipc", "cgroup"]);
        assert_eq!(v["process"]["env"][1], DEFAULT_PATH_ENV);
        assert_eq!(v["process"]["capabilities"]["bounding"].as_array().unwrap().len(), 14);
        assert!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c != "CAP_SYS_ADMIN")
        );
        assert_eq!(v["process"]["user"]["additionalGids"][0], 3);
        assert!(v["process"]["noNewPrivileges"] == false);
        let dests: Vec<&str> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert!(!dests.iter().any(|d| d.starts_with("/sys/fs/cgroup")));
        assert_eq!(v["linux"]["cgroupsPath"], "c");
    }

    fn rootless_spec(network: Network) -> serde_json::Value {
        let user = ResolvedUser { uid: 0, gid: 0, additional_gids: vec![0, 10] };
        let args = vec!["/bin/true".to_string()];
        let spec = build(ConfigInput {
            rootfs: Path::new("/r"),
            args: &args,
            env: &[],
            cwd: "/",
            user: &user,
            hostname: "h",
            network,
            cgroup: "c",
            extra_mounts: vec![],
            rootless: Some((1234, 5678)),
        })
        .unwrap();
        serde_json::to_value(&spec).unwrap()
    }

    fn mount_of<'a>(v: &'a serde_json::Value, dest: &str) -> &'a serde_json::Value {
        v["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == dest).unwrap()
    }

    #[test]
    fn rootless_differences() {
        let v = rootless_spec(Network::Host);
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["mount", "pid", "uts", "ipc", "user"]);
        let one = |host: u32| serde_json::json!([{"containerID": 0, "hostID": host, "size": 1}]);
        assert_eq!(v["linux"]["uidMappings"], one(1234));
        assert_eq!(v["linux"]["gidMappings"], one(5678));
        // No cgroup: neither resources (device rules) nor a path.
        assert!(v["linux"].get("resources").is_none(), "{}", v["linux"]);
        assert!(v["linux"].get("cgroupsPath").is_none(), "{}", v["linux"]);
        // Unmapped additional gids would make runc fail.
        assert!(v["process"]["user"].get("additionalGids").is_none(), "{}", v["process"]);
        let devpts = mount_of(&v, "/dev/pts")["options"].as_array().unwrap();
        assert!(!devpts.iter().any(|o| o == "gid=5"), "{devpts:?}");
        let sys = mount_of(&v, "/sys");
        assert_eq!(sys["source"], "/sys");
        assert_eq!(sys["options"][0], "rbind");
        assert!(sys["options"].as_array().unwrap().iter().any(|o| o == "ro"));
        // The capability set and masking stay as with root.
        assert_eq!(v["process"]["capabilities"]["bounding"].as_array().unwrap().len(), 14);
        assert!(v["linux"]["maskedPaths"].as_array().unwrap().iter().any(|p| p == "/proc/kcore"));
    }

    #[test]
    fn rootless_with_own_network_mounts_sysfs() {
        let v = rootless_spec(Network::None);
        assert_eq!(mount_of(&v, "/sys")["type"], "sysfs");
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        assert!(
            ns.iter().any(|n| n["type"] == "network") && ns.iter().any(|n| n["type"] == "user")
        );
    }

    #[test]
    fn root_keeps_cgroup_and_tty_group() {
        let user = ResolvedUser { uid: 0, gid: 0, additional_gids: vec![] };
        let args = vec!["/bin/true".to_string()];
        let v = serde_json::to_value(
            build(ConfigInput {
                rootfs: Path::new("/r"),
                args: &args,
                env: &[],
                cwd: "/",
                user: &user,
                hostname: "h",
                network: Network::Host,
                cgroup: "c",
                extra_mounts: vec![],
                rootless: None,
            })
            .unwrap(),
        )
        .unwrap();
        assert!(v["linux"].get("uidMappings").is_none());
        assert_eq!(v["linux"]["resources"]["devices"][0]["allow"], false);
        assert!(
            mount_of(&v, "/dev/pts")["options"].as_array().unwrap().iter().any(|o| o == "gid=5")
        );
        assert_eq!(mount_of(&v, "/sys")["type"], "sysfs");
    }

    const DEFAULT_PATH_ENV: &str =
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
}
