//! Canonical ordering of a cache config: BuildKit's `sortConfig` (`v1/utils.go`, the same
//! in v0.11.6 and HEAD), spec §4 "Canonical ordering".
//!
//! BuildKit sorts with `sort.Slice`, which is not stable, and its tie-breaks use pre-sort
//! indexes that come from Go map iteration; so for ties (same blob under two parents,
//! records with equal keys) its output is not reproducible anyway. strata uses stable
//! sorts, which makes its own output deterministic and leaves an already sorted config
//! untouched.

use std::cmp::Ordering;

use crate::config::{CacheConfig, CacheRecord};
use crate::error::IndexError;

/// Checks every index of `config` (parents, result layers, chain layers, input links).
/// Sorting and chain walking rewrite or follow them, so they must be in range first.
pub(crate) fn check_indexes(config: &CacheConfig) -> Result<(), IndexError> {
    let (nl, nr) = (config.layers.len(), config.records.len());
    for (i, l) in config.layers.iter().enumerate() {
        if l.parent < -1 || l.parent >= nl as i64 {
            return Err(IndexError::Parent { layer: i, parent: l.parent, len: nl });
        }
    }
    for (ri, r) in config.records.iter().enumerate() {
        for (k, res) in r.results.iter().enumerate() {
            if res.layer >= nl {
                return Err(IndexError::ResultLayer {
                    record: ri,
                    result: k,
                    index: res.layer,
                    len: nl,
                });
            }
        }
        for (k, ch) in r.chains.iter().enumerate() {
            if let Some(&bad) = ch.layers.iter().find(|&&l| l >= nl) {
                return Err(IndexError::ChainLayer { record: ri, chain: k, index: bad, len: nl });
            }
        }
        for (k, group) in r.inputs.iter().enumerate() {
            if let Some(bad) = group.iter().find(|inp| inp.link >= nr) {
                return Err(IndexError::Link { record: ri, input: k, index: bad.link, len: nr });
            }
        }
    }
    Ok(())
}

/// Sorts `config` into BuildKit's canonical order:
///
/// 1. layers by (blob digest string, pre-sort parent index), parents rewritten;
/// 2. records by digest, number of input groups, each group's length, then for each
///    input the selector and the digest of the (pre-sort) linked record;
/// 3. result layer indexes and input links rewritten, each input group sorted by link.
///
/// Chain indexes (`chains`, inline cache only) are rewritten too so they keep their
/// meaning; BuildKit never has chains at this point. On an out-of-range index the config
/// is left unchanged and the error names it.
pub fn sort_config(config: &mut CacheConfig) -> Result<(), IndexError> {
    check_indexes(config)?;

    // Layers.
    let layers = &config.layers;
    let mut layer_order: Vec<usize> = (0..layers.len()).collect();
    layer_order.sort_by(|&a, &b| {
        let (la, lb) = (&layers[a], &layers[b]);
        la.blob.as_str().cmp(lb.blob.as_str()).then(la.parent.cmp(&lb.parent))
    });
    let new_layer = inverse(&layer_order);
    let mut sorted_layers = Vec::with_capacity(layers.len());
    for &old in &layer_order {
        let mut l = layers[old].clone();
        if l.parent != -1 {
            // In range (checked above), so the cast is lossless.
            l.parent = new_layer[l.parent as usize] as i64;
        }
        sorted_layers.push(l);
    }

    // Records. The comparator reads the pre-sort table for linked digests, like Go.
    let records = &config.records;
    let mut record_order: Vec<usize> = (0..records.len()).collect();
    record_order.sort_by(|&a, &b| compare_records(records, &records[a], &records[b]));
    let new_record = inverse(&record_order);
    let mut sorted_records = Vec::with_capacity(records.len());
    for &old in &record_order {
        let mut r = records[old].clone();
        for res in &mut r.results {
            res.layer = new_layer[res.layer];
        }
        for ch in &mut r.chains {
            for l in &mut ch.layers {
                *l = new_layer[*l];
            }
        }
        for group in &mut r.inputs {
            for inp in group.iter_mut() {
                inp.link = new_record[inp.link];
            }
            group.sort_by_key(|inp| inp.link);
        }
        sorted_records.push(r);
    }

    config.layers = sorted_layers;
    config.records = sorted_records;
    Ok(())
}

fn compare_records(all: &[CacheRecord], a: &CacheRecord, b: &CacheRecord) -> Ordering {
    a.digest.cmp(&b.digest).then(a.inputs.len().cmp(&b.inputs.len())).then_with(|| {
        for (ga, gb) in a.inputs.iter().zip(&b.inputs) {
            if ga.len() != gb.len() {
                return ga.len().cmp(&gb.len());
            }
            for (ia, ib) in ga.iter().zip(gb) {
                let by_selector = ia.selector.cmp(&ib.selector);
                if by_selector != Ordering::Equal {
                    return by_selector;
                }
                let by_link = all[ia.link].digest.cmp(&all[ib.link].digest);
                if by_link != Ordering::Equal {
                    return by_link;
                }
            }
        }
        Ordering::Equal
    })
}

/// `order[new] = old` → `inverse[old] = new`.
fn inverse(order: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; order.len()];
    for (new, &old) in order.iter().enumerate() {
        inv[old] = new;
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CacheInput, CacheLayer, CacheResult, ChainedResult};
    use crate::gotime::GoTime;
    use strata_oci::Digest;

    fn d(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }
    fn layer(c: char, parent: i64) -> CacheLayer {
        CacheLayer { blob: d(c), parent, annotations: None }
    }
    fn rec(digest: &str, inputs: Vec<Vec<(usize, &str)>>, layer: Option<usize>) -> CacheRecord {
        CacheRecord {
            results: layer
                .map(|l| vec![CacheResult { layer: l, created_at: GoTime::zero() }])
                .unwrap_or_default(),
            chains: vec![],
            digest: digest.into(),
            inputs: inputs
                .into_iter()
                .map(|g| {
                    g.into_iter().map(|(link, s)| CacheInput { selector: s.into(), link }).collect()
                })
                .collect(),
        }
    }

    #[test]
    fn sorts_layers_and_rewrites_parents() {
        // Chain: c (root) <- a <- b; plus a second "a" on top of b (same blob, two parents).
        let mut c = CacheConfig {
            layers: vec![layer('c', -1), layer('a', 0), layer('b', 1), layer('a', 2)],
            records: vec![rec("r", vec![], Some(3)), rec("q", vec![], Some(1))],
        };
        sort_config(&mut c).unwrap();
        let blobs: Vec<(char, i64)> =
            c.layers.iter().map(|l| (l.blob.hex().chars().next().unwrap(), l.parent)).collect();
        // 'a' with pre-sort parent 0 sorts before 'a' with pre-sort parent 2.
        // New positions: a(p0)=0, a(p2)=1, b=2, c=3.
        assert_eq!(blobs, vec![('a', 3), ('a', 2), ('b', 0), ('c', -1)]);
        // Records: q < r; q's result was layer 1 (a on c) = new 0, r's was layer 3 = new 1.
        assert_eq!(c.records[0].digest, "q");
        assert_eq!(c.records[0].results[0].layer, 0);
        assert_eq!(c.records[1].results[0].layer, 1);
    }

    #[test]
    fn sorts_records_by_inputs_and_rewrites_links() {
        let mut c = CacheConfig {
            layers: vec![],
            records: vec![
                rec("x", vec![vec![(3, "")], vec![(2, "")]], None), // 0
                rec("x", vec![vec![(2, "")]], None),                // 1: fewer groups
                rec("root-b", vec![], None),                        // 2
                rec("root-a", vec![], None),                        // 3
                rec("x", vec![vec![(2, ""), (3, "")]], None),       // 4: longer group 0
                rec("x", vec![vec![(3, "")], vec![(3, "")]], None), // 5
                rec("x", vec![vec![(3, "s")], vec![(3, "")]], None), // 6: selector
            ],
        };
        sort_config(&mut c).unwrap();
        let order: Vec<String> = c
            .records
            .iter()
            .map(|r| {
                let groups: Vec<String> = r
                    .inputs
                    .iter()
                    .map(|g| {
                        g.iter()
                            .map(|i| format!("{}{}", i.selector, i.link))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .collect();
                format!("{}[{}]", r.digest, groups.join("|"))
            })
            .collect();
        // root-a=0, root-b=1. Among the x's: 1 group < 2 groups; then a 1-long group 0
        // < a 2-long one; then "" selector < "s"; then linked digest root-a < root-b.
        assert_eq!(
            order,
            vec![
                "root-a[]", "root-b[]", "x[1]",
                // Record 4: group [2,3] → links [1,0], re-sorted by new link.
                "x[0,1]", "x[0|0]", "x[0|1]", "x[s0|0]",
            ]
        );
    }

    #[test]
    fn sorted_config_is_a_fixed_point_and_chains_follow() {
        let mut c = CacheConfig {
            layers: vec![layer('b', -1), layer('a', 0)],
            records: vec![CacheRecord {
                chains: vec![ChainedResult { layers: vec![0, 1], created_at: GoTime::zero() }],
                ..rec("r", vec![], Some(1))
            }],
        };
        sort_config(&mut c).unwrap();
        assert_eq!(c.records[0].chains[0].layers, vec![1, 0]);
        assert_eq!(c.records[0].results[0].layer, 0);
        let once = c.clone();
        sort_config(&mut c).unwrap();
        assert_eq!(c, once);
    }

    #[test]
    fn out_of_range_indexes_are_errors_not_panics() {
        let mut c = CacheConfig { layers: vec![layer('a', 1)], records: vec![] };
        let before = c.clone();
        assert_eq!(sort_config(&mut c), Err(IndexError::Parent { layer: 0, parent: 1, len: 1 }));
        assert_eq!(c, before);
        let mut c = CacheConfig { layers: vec![layer('a', -2)], records: vec![] };
        assert!(matches!(sort_config(&mut c), Err(IndexError::Parent { parent: -2, .. })));
        let mut c = CacheConfig { layers: vec![], records: vec![rec("r", vec![], Some(0))] };
        assert!(matches!(sort_config(&mut c), Err(IndexError::ResultLayer { .. })));
        let mut c =
            CacheConfig { layers: vec![], records: vec![rec("r", vec![vec![(5, "")]], None)] };
        assert!(matches!(
            sort_config(&mut c),
            Err(IndexError::Link { record: 0, input: 0, index: 5, len: 1 })
        ));
    }
}
