//! Structural validation of a cache config against its manifest (spec §4, §7 step 3).
//!
//! BuildKit reports broken configs lazily and tersely ("invalid looping record", "invalid
//! layer index 7") or silently drops results whose blob is absent. strata checks the
//! whole graph up front and names each offending record, layer or descriptor, so that
//! `strata cache verify` can explain a cache and the exporter can refuse to write one
//! that BuildKit would choke on.

use std::collections::HashSet;
use std::fmt;

use strata_oci::{Descriptor, Digest, media};

use crate::config::CacheConfig;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Importable, but something is off (BuildKit may fail later, on a cache hit).
    Warning,
    /// BuildKit would reject the config or lose results.
    Error,
}

/// What a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// `layers[i]` of the config.
    Layer(usize),
    /// `records[i]` of the config.
    Record(usize),
    /// The i-th layer descriptor of the manifest.
    Descriptor(usize),
}

/// One finding of [`validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// Where.
    pub subject: Subject,
    /// What, in words (includes the index and, where useful, the digest).
    pub message: String,
}

impl Problem {
    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{sev}: {}", self.message)
    }
}

/// Checks `config` (and, when given, the manifest's layer descriptors):
///
/// - errors: parent out of range (-1 allowed), looping layer chains, result/chain layer
///   indexes out of range, input links out of range, empty input slots, looping records,
///   config blobs missing from the descriptors;
/// - warnings: records without a digest, descriptors without `containerd.io/uncompressed`
///   or with an unknown layer media type.
///
/// Problems come in a stable order: layers, records, descriptors.
pub fn validate(config: &CacheConfig, layer_descriptors: Option<&[Descriptor]>) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut push = |severity, subject, message: String| {
        out.push(Problem { severity, subject, message });
    };
    let nl = config.layers.len();
    let nr = config.records.len();

    // Layers: parent range.
    for (i, l) in config.layers.iter().enumerate() {
        if l.parent < -1 || l.parent >= nl as i64 {
            push(
                Severity::Error,
                Subject::Layer(i),
                format!(
                    "layer {i} ({}): parent index {} out of range (-1 or 0..{nl})",
                    l.blob, l.parent
                ),
            );
        }
    }
    // Layers: loops. Each layer has one parent, so follow the chain; a layer already on
    // the current path closes a loop. Reported once per loop, at the first layer found.
    let mut state = vec![Mark::New; nl];
    for start in 0..nl {
        let mut path = Vec::new();
        let mut cur = start;
        loop {
            match state[cur] {
                Mark::Done => break,
                Mark::OnPath => {
                    push(
                        Severity::Error,
                        Subject::Layer(cur),
                        format!(
                            "layer {cur} ({}): invalid looping layer chain (its parents lead back to it)",
                            config.layers[cur].blob
                        ),
                    );
                    break;
                }
                Mark::New => {}
            }
            state[cur] = Mark::OnPath;
            path.push(cur);
            let p = config.layers[cur].parent;
            if p < 0 || p >= nl as i64 {
                break;
            }
            cur = p as usize;
        }
        for i in path {
            state[i] = Mark::Done;
        }
    }

    // Records: indexes.
    for (ri, r) in config.records.iter().enumerate() {
        if r.digest.is_empty() {
            push(Severity::Warning, Subject::Record(ri), format!("record {ri}: no digest"));
        }
        for (k, res) in r.results.iter().enumerate() {
            if res.layer >= nl {
                push(
                    Severity::Error,
                    Subject::Record(ri),
                    format!(
                        "record {ri} ({}): result {k} has invalid layer index {} ({nl} layers)",
                        r.digest, res.layer
                    ),
                );
            }
        }
        for (k, ch) in r.chains.iter().enumerate() {
            for &l in ch.layers.iter().filter(|&&l| l >= nl) {
                push(
                    Severity::Error,
                    Subject::Record(ri),
                    format!(
                        "record {ri} ({}): chain {k} has invalid layer index {l} ({nl} layers)",
                        r.digest
                    ),
                );
            }
        }
        for (k, group) in r.inputs.iter().enumerate() {
            if group.is_empty() {
                push(
                    Severity::Error,
                    Subject::Record(ri),
                    format!("record {ri} ({}): invalid empty input {k}", r.digest),
                );
            }
            for inp in group.iter().filter(|inp| inp.link >= nr) {
                push(
                    Severity::Error,
                    Subject::Record(ri),
                    format!(
                        "record {ri} ({}): input {k} links invalid record ID {} ({nr} records)",
                        r.digest, inp.link
                    ),
                );
            }
        }
    }
    // Records: loops, by iterative DFS over input links (deep graphs must not overflow
    // the stack). BuildKit's parseRecord fails with "invalid looping record" on any
    // record reachable from itself.
    let mut state = vec![Mark::New; nr];
    for root in 0..nr {
        if state[root] != Mark::New {
            continue;
        }
        // Stack of (record, input slot, alternative) cursors: O(1) per step, so a
        // hostile 16 MiB config with a million alternatives stays linear.
        let mut stack: Vec<(usize, usize, usize)> = vec![(root, 0, 0)];
        state[root] = Mark::OnPath;
        while let Some(top) = stack.last_mut() {
            let (rec, slot, alt) = *top;
            let inputs = &config.records[rec].inputs;
            let link = match inputs.get(slot) {
                None => None,
                Some(group) if alt >= group.len() => {
                    *top = (rec, slot + 1, 0);
                    continue;
                }
                Some(group) => Some(group[alt].link),
            };
            match link {
                None => {
                    state[rec] = Mark::Done;
                    stack.pop();
                }
                Some(next) => {
                    top.2 += 1;
                    if next >= nr {
                        continue; // reported above
                    }
                    match state[next] {
                        Mark::Done => {}
                        Mark::OnPath => push(
                            Severity::Error,
                            Subject::Record(rec),
                            format!(
                                "record {rec} ({}): invalid looping record (links record {next}, which depends on it)",
                                config.records[rec].digest
                            ),
                        ),
                        Mark::New => {
                            state[next] = Mark::OnPath;
                            stack.push((next, 0, 0));
                        }
                    }
                }
            }
        }
    }

    // Descriptors.
    if let Some(descs) = layer_descriptors {
        let present: HashSet<&Digest> = descs.iter().map(|d| &d.digest).collect();
        for (i, l) in config.layers.iter().enumerate() {
            if !present.contains(&l.blob) {
                push(
                    Severity::Error,
                    Subject::Layer(i),
                    format!(
                        "layer {i}: blob {} has no descriptor in the manifest (BuildKit drops every result using it)",
                        l.blob
                    ),
                );
            }
        }
        for (i, d) in descs.iter().enumerate() {
            match d.annotation(media::ANNOTATION_UNCOMPRESSED) {
                None => push(
                    Severity::Warning,
                    Subject::Descriptor(i),
                    format!(
                        "layer descriptor {i} ({}): missing {} annotation (BuildKit fails when a hit loads it)",
                        d.digest,
                        media::ANNOTATION_UNCOMPRESSED
                    ),
                ),
                Some(v) if Digest::parse(v).is_err() => push(
                    Severity::Warning,
                    Subject::Descriptor(i),
                    format!(
                        "layer descriptor {i} ({}): {} is not a sha256 digest: {v:?}",
                        d.digest,
                        media::ANNOTATION_UNCOMPRESSED
                    ),
                ),
                Some(_) => {}
            }
            if media::layer_kind(&d.media_type).is_none() {
                push(
                    Severity::Warning,
                    Subject::Descriptor(i),
                    format!(
                        "layer descriptor {i} ({}): unknown layer media type {:?}",
                        d.digest, d.media_type
                    ),
                );
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    New,
    OnPath,
    Done,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CacheInput, CacheLayer, CacheRecord, CacheResult, ChainedResult};
    use crate::gotime::GoTime;

    fn d(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }
    fn layer(c: char, parent: i64) -> CacheLayer {
        CacheLayer { blob: d(c), parent, annotations: None }
    }
    fn rec(digest: &str, links: &[&[usize]]) -> CacheRecord {
        CacheRecord {
            digest: digest.into(),
            inputs: links
                .iter()
                .map(|g| {
                    g.iter().map(|&link| CacheInput { selector: String::new(), link }).collect()
                })
                .collect(),
            ..Default::default()
        }
    }
    fn errors(p: &[Problem]) -> Vec<&Problem> {
        p.iter().filter(|p| p.is_error()).collect()
    }
    fn layer_desc(c: char) -> Descriptor {
        let mut x = Descriptor::new(media::OCI_LAYER_GZIP, d(c), 1);
        x.set_annotation(media::ANNOTATION_UNCOMPRESSED, d('f').as_str());
        x
    }

    #[test]
    fn clean_config_has_no_problems() {
        let c = CacheConfig {
            layers: vec![layer('a', -1), layer('b', 0)],
            records: vec![
                rec("r0", &[]),
                CacheRecord {
                    results: vec![CacheResult { layer: 1, created_at: GoTime::zero() }],
                    ..rec("r1", &[&[0]])
                },
            ],
        };
        assert_eq!(validate(&c, Some(&[layer_desc('a'), layer_desc('b')])), vec![]);
    }

    #[test]
    fn bad_indexes() {
        let c = CacheConfig {
            layers: vec![layer('a', 5), layer('b', -2)],
            records: vec![CacheRecord {
                results: vec![CacheResult { layer: 2, created_at: GoTime::zero() }],
                chains: vec![ChainedResult { layers: vec![0, 9], created_at: GoTime::zero() }],
                ..rec("r", &[&[3], &[]])
            }],
        };
        let p = validate(&c, None);
        let subjects: Vec<Subject> = errors(&p).iter().map(|p| p.subject).collect();
        assert_eq!(
            subjects,
            vec![
                Subject::Layer(0),
                Subject::Layer(1),
                Subject::Record(0),
                Subject::Record(0),
                Subject::Record(0),
                Subject::Record(0),
            ]
        );
        let all = p.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        for needle in ["parent index 5", "parent index -2", "invalid layer index 2", "index 9"] {
            assert!(all.contains(needle), "{needle} not in {all}");
        }
        assert!(all.contains("invalid empty input 1") && all.contains("invalid record ID 3"));
    }

    #[test]
    fn looping_layers_and_records() {
        let c = CacheConfig {
            layers: vec![layer('a', 1), layer('b', 0), layer('c', 2), layer('d', 0)],
            records: vec![
                rec("r0", &[&[1]]),
                rec("r1", &[&[2]]),
                rec("r2", &[&[0]]),
                rec("r3", &[&[3]]),
            ],
        };
        let p = validate(&c, None);
        let msgs: Vec<String> = errors(&p).iter().map(|p| p.message.clone()).collect();
        // One loop a<->b (d only leads into it), one self-loop c; one record loop
        // r0->r1->r2->r0 and one self-loop r3.
        assert_eq!(msgs.iter().filter(|m| m.contains("looping layer")).count(), 2, "{msgs:?}");
        assert_eq!(msgs.iter().filter(|m| m.contains("looping record")).count(), 2, "{msgs:?}");
        assert!(msgs.iter().any(|m| m.starts_with("record 3 ")));
    }

    #[test]
    fn deep_record_chain_does_not_overflow() {
        let n = 200_000;
        let records =
            (0..n).map(|i| if i == 0 { rec("r", &[]) } else { rec("r", &[&[i - 1]]) }).collect();
        let c = CacheConfig { layers: vec![], records };
        assert!(errors(&validate(&c, None)).is_empty());
    }

    #[test]
    fn many_alternatives_stay_linear() {
        let alts: Vec<usize> = vec![0; 1_000_000];
        let c = CacheConfig {
            layers: vec![],
            records: vec![rec("r0", &[]), rec("r1", &[&alts, &[0]])],
        };
        assert!(errors(&validate(&c, None)).is_empty());
    }

    #[test]
    fn descriptor_checks() {
        let c = CacheConfig { layers: vec![layer('a', -1), layer('b', 0)], records: vec![] };
        let mut no_uncompressed = layer_desc('a');
        no_uncompressed.annotations = None;
        let mut weird = layer_desc('c');
        weird.media_type = "application/x-foo".into();
        let p = validate(&c, Some(&[no_uncompressed, weird]));
        let errs = errors(&p);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].subject, Subject::Layer(1));
        assert!(errs[0].message.contains(d('b').as_str()));
        let warns: Vec<&Problem> = p.iter().filter(|p| !p.is_error()).collect();
        assert_eq!(warns.len(), 2);
        assert!(warns[0].message.contains("containerd.io/uncompressed"));
        assert!(warns[1].message.contains("application/x-foo"));
    }
}
