//! `--shard I/N`: a deterministic share of a dataset's problems.
//!
//! Problem `id` belongs to shard `SeededRng::derive(0, "shard:" + id).next_u64() mod N`
//! (SplitMix64 over the FNV-1a hash of the id). The split depends on the id alone, not on the
//! order of the file, `--limit` (applied first) or the machine, so the shards `0/N` … `N−1/N`
//! partition the problems and their directories can be merged by `ponder report`.

use std::fmt;
use std::str::FromStr;

use ponder_core::SeededRng;
use serde::{Deserialize, Serialize};

/// Shard `index` of `count` (0 ≤ index < count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// The shard that `id` belongs to, among `count`.
    pub fn of(id: &str, count: u32) -> u32 {
        if count <= 1 {
            return 0;
        }
        let h = SeededRng::derive(0, &format!("shard:{id}")).next_u64();
        (h % u64::from(count)) as u32
    }

    pub fn contains(&self, id: &str) -> bool {
        Shard::of(id, self.count) == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid shard `{s}`: expected I/N with 0 ≤ I < N, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_ids_deterministically() {
        let ids: Vec<String> = (0..1000).map(|i| format!("p-{i}")).collect();
        let mut sizes = [0usize; 4];
        for id in &ids {
            let owners: Vec<u32> = (0..4)
                .filter(|i| {
                    Shard {
                        index: *i,
                        count: 4,
                    }
                    .contains(id)
                })
                .collect();
            assert_eq!(owners.len(), 1, "{id} belongs to exactly one shard");
            sizes[owners[0] as usize] += 1;
            // The same answer every time (no hidden state).
            assert_eq!(Shard::of(id, 4), owners[0]);
        }
        // Roughly even: each within 250 ± 60.
        assert!(sizes.iter().all(|s| (190..=310).contains(s)), "{sizes:?}");
        // Pinned values, so that a change of the hash is noticed: shards of runs already on
        // disk would no longer merge.
        let pinned: Vec<u32> = ["a", "b", "synth-easy-1-000000"]
            .iter()
            .map(|id| Shard::of(id, 7))
            .collect();
        assert_eq!(pinned, PINNED);
    }

    const PINNED: [u32; 3] = [0, 4, 6];

    #[test]
    fn shard_syntax() {
        assert_eq!("1/4".parse::<Shard>(), Ok(Shard { index: 1, count: 4 }));
        assert_eq!(Shard { index: 1, count: 4 }.to_string(), "1/4");
        for bad in ["4/4", "1/0", "x/2", "3", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert!(Shard { index: 0, count: 1 }.contains("anything"));
    }
}
