//! A simulated prefix cache: which leading blocks of a prompt the server has seen before.
//!
//! Like vLLM's automatic prefix caching, prompts are cut into blocks of [`BLOCK_TOKENS`] tokens and
//! each block is identified by a hash chained over every token before it, so a block hits only if
//! the whole prefix up to it is identical. A hit is reported as `cached_tokens` (a multiple of the
//! block size, never the whole prompt: the last token is always recomputed).
//!
//! Memory is bounded: two generations of block hashes, each at most half the capacity; when the
//! young one fills up, the old one is dropped (an approximate LRU: a hit in the old generation
//! moves the block to the young one).

use std::collections::HashSet;

use ponder_core::stable_hash;

use crate::tokenizer;

/// Tokens per cache block.
pub const BLOCK_TOKENS: usize = 16;

#[derive(Debug)]
pub(crate) struct PrefixCache {
    young: HashSet<u64>,
    old: HashSet<u64>,
    half_capacity: usize,
}

impl PrefixCache {
    /// A cache of about `blocks` blocks (0 disables it).
    pub fn new(blocks: usize) -> Self {
        PrefixCache {
            young: HashSet::new(),
            old: HashSet::new(),
            half_capacity: blocks / 2,
        }
    }

    /// Looks `block_hashes` up, returns the number of cached prompt tokens, and records them.
    pub fn lookup_and_insert(&mut self, block_hashes: &[u64], prompt_tokens: usize) -> usize {
        if self.half_capacity == 0 {
            return 0;
        }
        let hit_blocks = block_hashes
            .iter()
            .take_while(|h| self.young.contains(h) || self.old.contains(h))
            .count();
        for &h in block_hashes {
            if self.young.len() >= self.half_capacity {
                self.old = std::mem::take(&mut self.young);
            }
            self.young.insert(h);
        }
        // The last prompt token is always recomputed, so a full hit is one block short.
        let max_cached = prompt_tokens.saturating_sub(1) / BLOCK_TOKENS * BLOCK_TOKENS;
        (hit_blocks * BLOCK_TOKENS).min(max_cached)
    }
}

/// The chained hashes of the full blocks of `text`, and its token count.
pub(crate) fn block_hashes(text: &str) -> (Vec<u64>, usize) {
    let mut hashes = Vec::new();
    let mut chain: u64 = 0x5349_4d50_5245_4649; // "SIMPREFI"
    let mut in_block = 0;
    let mut count = 0;
    for token in tokenizer::tokens(text) {
        count += 1;
        chain = stable_hash(token.as_bytes()) ^ chain.rotate_left(5).wrapping_mul(0x100_0000_01B3);
        in_block += 1;
        if in_block == BLOCK_TOKENS {
            hashes.push(chain);
            in_block = 0;
        }
    }
    (hashes, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_prefixes_hit_in_whole_blocks() {
        let mut cache = PrefixCache::new(1024);
        let base = " word".repeat(40); // 40 tokens
        let (h, n) = block_hashes(&base);
        assert_eq!((h.len(), n), (2, 40));
        assert_eq!(cache.lookup_and_insert(&h, n), 0);
        let longer = format!("{base}and more words here");
        let (h2, n2) = block_hashes(&longer);
        assert_eq!(cache.lookup_and_insert(&h2, n2), 32);
        // A different first token changes every block's hash.
        let other = format!("x{base}");
        let (h3, n3) = block_hashes(&other);
        assert_eq!(cache.lookup_and_insert(&h3, n3), 0);
    }

    #[test]
    fn a_full_hit_recomputes_the_last_token() {
        let mut cache = PrefixCache::new(1024);
        let text = " word".repeat(32);
        let (h, n) = block_hashes(&text);
        cache.lookup_and_insert(&h, n);
        assert_eq!(cache.lookup_and_insert(&h, n), 16);
    }

    #[test]
    fn memory_stays_bounded() {
        let mut cache = PrefixCache::new(8);
        for i in 0..100 {
            let text = format!("{i} ").repeat(64);
            let (h, n) = block_hashes(&text);
            cache.lookup_and_insert(&h, n);
            assert!(cache.young.len() + cache.old.len() <= 8);
        }
    }
}
