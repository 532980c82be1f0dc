//! The prefix cache's index: a radix trie from token sequences to the KV sequences holding them.
//!
//! Every idle sequence in the KV cache is inserted with the tokens its cells hold. A new prompt
//! looks up its longest cached prefix and the sequence to copy it from; copying a prefix in
//! llama.cpp's unified KV cache shares the cells, so only the new tokens are decoded.

/// A KV-cache sequence id.
pub type SeqId = i32;

#[derive(Debug, Default)]
struct Node {
    /// Tokens on the edge into this node.
    edge: Vec<u32>,
    children: Vec<usize>,
    /// Sequences whose token path runs through the whole edge into this node.
    holders: Vec<SeqId>,
}

/// A path found by [`PrefixTrie::longest_accepted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted<S> {
    pub tokens: Vec<u32>,
    /// A sequence whose cells hold `tokens`.
    pub seq: SeqId,
    /// The walk's state after the last token.
    pub state: S,
}

/// Radix trie over token sequences.
#[derive(Debug)]
pub struct PrefixTrie {
    nodes: Vec<Option<Node>>,
    free: Vec<usize>,
}

impl Default for PrefixTrie {
    fn default() -> Self {
        PrefixTrie {
            nodes: vec![Some(Node::default())],
            free: Vec::new(),
        }
    }
}

fn common(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixTrie {
    pub fn new() -> Self {
        Self::default()
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("live node")
    }

    fn node_mut(&mut self, i: usize) -> &mut Node {
        self.nodes[i].as_mut().expect("live node")
    }

    fn alloc(&mut self, node: Node) -> usize {
        if let Some(i) = self.free.pop() {
            self.nodes[i] = Some(node);
            i
        } else {
            self.nodes.push(Some(node));
            self.nodes.len() - 1
        }
    }

    /// Records that `seq` holds `tokens` (positions 0..len).
    pub fn insert(&mut self, tokens: &[u32], seq: SeqId) {
        let mut at = 0;
        let mut rest = tokens;
        while !rest.is_empty() {
            let child = self
                .node(at)
                .children
                .iter()
                .copied()
                .find(|&c| self.node(c).edge.first() == rest.first());
            let Some(child) = child else {
                let leaf = self.alloc(Node {
                    edge: rest.to_vec(),
                    children: Vec::new(),
                    holders: vec![seq],
                });
                self.node_mut(at).children.push(leaf);
                return;
            };
            let n = common(&self.node(child).edge, rest);
            if n < self.node(child).edge.len() {
                // Split the edge at n: a middle node takes the shared part.
                let tail = self.node_mut(child).edge.split_off(n);
                let head = std::mem::replace(&mut self.node_mut(child).edge, tail);
                let holders = self.node(child).holders.clone();
                let middle = self.alloc(Node {
                    edge: head,
                    children: vec![child],
                    holders,
                });
                let parent = self.node_mut(at);
                let slot = parent
                    .children
                    .iter()
                    .position(|&c| c == child)
                    .expect("child of parent");
                parent.children[slot] = middle;
                at = middle;
            } else {
                at = child;
            }
            self.node_mut(at).holders.push(seq);
            rest = &rest[n..];
        }
    }

    /// The longest cached prefix of `tokens`: its length and a sequence holding it.
    pub fn longest_prefix(&self, tokens: &[u32]) -> Option<(usize, SeqId)> {
        let mut at = 0;
        let mut matched = 0;
        let mut best = None;
        loop {
            let rest = &tokens[matched..];
            let Some(child) = self
                .node(at)
                .children
                .iter()
                .copied()
                .find(|&c| !rest.is_empty() && self.node(c).edge.first() == rest.first())
            else {
                return best;
            };
            let node = self.node(child);
            let n = common(&node.edge, rest);
            if let Some(&seq) = node.holders.first() {
                best = Some((matched + n, seq));
            }
            if n < node.edge.len() {
                return best;
            }
            matched += n;
            at = child;
        }
    }

    /// The longest cached path that `step` accepts token by token and that ends where `step`
    /// allows: its tokens, a sequence holding them, and `step`'s state after the last of them.
    ///
    /// `step(state, token)` returns `None` when `token` cannot come next (the branch is
    /// dropped), else whether the path may end after it. Every branch `step` accepts is
    /// followed, depth first, and each cached token position is visited at most once, so a
    /// walk costs at most the tokens held and usually only the accepted ones. Of equally long
    /// paths, the first one found is returned.
    pub fn longest_accepted<S: Clone>(
        &self,
        start: S,
        mut step: impl FnMut(&mut S, u32) -> Option<bool>,
    ) -> Option<Accepted<S>> {
        // The tokens from the root to the node being walked; a frame knows how many of them
        // lead to its node.
        let mut path: Vec<u32> = Vec::new();
        let mut best: Option<Accepted<S>> = None;
        let mut frames: Vec<(usize, usize, S)> = self
            .node(0)
            .children
            .iter()
            .map(|&c| (c, 0, start.clone()))
            .collect();
        while let Some((at, depth, mut state)) = frames.pop() {
            path.truncate(depth);
            let node = self.node(at);
            let mut end: Option<(usize, S)> = None;
            let mut whole_edge = true;
            for &token in &node.edge {
                match step(&mut state, token) {
                    None => {
                        whole_edge = false;
                        break;
                    }
                    Some(may_end) => {
                        path.push(token);
                        if may_end {
                            end = Some((path.len(), state.clone()));
                        }
                    }
                }
            }
            // Only the deepest end on this edge can improve on `best`, so the path is copied
            // at most once per node.
            if let (Some((len, end_state)), Some(&seq)) = (end, node.holders.first()) {
                if best.as_ref().is_none_or(|b| len > b.tokens.len()) {
                    best = Some(Accepted {
                        tokens: path[..len].to_vec(),
                        seq,
                        state: end_state,
                    });
                }
            }
            if whole_edge {
                let depth = path.len();
                frames.extend(node.children.iter().map(|&c| (c, depth, state.clone())));
            }
        }
        best
    }

    /// Forgets that `seq` holds `tokens` (the same tokens it was inserted with).
    pub fn remove(&mut self, tokens: &[u32], seq: SeqId) {
        let mut path = vec![0usize];
        let mut at = 0;
        let mut rest = tokens;
        while !rest.is_empty() {
            let Some(child) = self
                .node(at)
                .children
                .iter()
                .copied()
                .find(|&c| self.node(c).edge.first() == rest.first())
            else {
                break;
            };
            let n = self.node(child).edge.len();
            if rest.len() < n || rest[..n] != self.node(child).edge[..] {
                break;
            }
            let holders = &mut self.node_mut(child).holders;
            if let Some(i) = holders.iter().position(|&s| s == seq) {
                holders.swap_remove(i);
            }
            path.push(child);
            at = child;
            rest = &rest[n..];
        }
        // Prune nodes nobody holds any more, deepest first.
        for w in (1..path.len()).rev() {
            let (parent, node) = (path[w - 1], path[w]);
            if self.node(node).holders.is_empty() && self.node(node).children.is_empty() {
                self.node_mut(parent).children.retain(|&c| c != node);
                self.nodes[node] = None;
                self.free.push(node);
            }
        }
    }

    /// Distinct token positions held (the sum of edge lengths): about the KV cells the indexed
    /// sequences occupy, since sequences sharing a prefix share its cells.
    pub fn token_count(&self) -> usize {
        self.nodes.iter().flatten().map(|n| n.edge.len()).sum()
    }

    /// Number of live nodes besides the root (for tests and stats).
    pub fn len(&self) -> usize {
        self.nodes.iter().filter(|n| n.is_some()).count() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_across_splits() {
        let mut t = PrefixTrie::new();
        assert_eq!(t.longest_prefix(&[1, 2, 3]), None);
        t.insert(&[1, 2, 3, 4, 5], 7);
        assert_eq!(t.longest_prefix(&[1, 2, 3, 9]), Some((3, 7)));
        assert_eq!(t.longest_prefix(&[1, 2, 3, 4, 5, 6]), Some((5, 7)));
        assert_eq!(t.longest_prefix(&[2]), None);
        t.insert(&[1, 2, 8], 9);
        assert_eq!(t.token_count(), 6, "[1,2] once, [3,4,5] and [8]");
        // [1,2] is shared; both hold it, 9 alone holds [1,2,8].
        assert_eq!(t.longest_prefix(&[1, 2, 8, 8]), Some((3, 9)));
        assert_eq!(t.longest_prefix(&[1, 2, 3, 4]), Some((4, 7)));
        assert_eq!(t.longest_prefix(&[1, 2, 0]).map(|p| p.0), Some(2));
    }

    #[test]
    fn longest_accepted_follows_every_accepted_branch() {
        let mut t = PrefixTrie::new();
        t.insert(&[1, 2, 3, 4], 1);
        t.insert(&[1, 2, 5, 6, 7], 2);
        t.insert(&[1, 8], 3);
        // Accepts tokens below 7, ends after even ones; the state counts accepted tokens.
        let walk = |t: &PrefixTrie| {
            t.longest_accepted(0usize, |n, tok| {
                *n += 1;
                (tok < 7).then_some(tok % 2 == 0)
            })
        };
        // [1,2,3,4] ends after 4 and [1,2,5,6] after 6 (7 is refused): 4 tokens each, either
        // may be found first. [1,8] has no end (1 is odd, 8 is refused).
        let found = walk(&t).expect("a path");
        assert_eq!((found.tokens.len(), found.state), (4, 4));
        assert!(
            [(vec![1, 2, 3, 4], 1), (vec![1, 2, 5, 6], 2)]
                .contains(&(found.tokens.clone(), found.seq)),
            "{found:?}"
        );
        t.insert(&[1, 2, 5, 6, 0, 2], 4);
        let found = walk(&t).expect("a path");
        assert_eq!(
            (found.tokens, found.seq, found.state),
            (vec![1, 2, 5, 6, 0, 2], 4, 6)
        );
        // Nothing accepted, or no place to end: no path.
        assert_eq!(t.longest_accepted((), |_, _| None), None);
        assert_eq!(t.longest_accepted((), |_, _| Some(false)), None);
    }

    #[test]
    fn remove_prunes_and_keeps_others() {
        let mut t = PrefixTrie::new();
        t.insert(&[1, 2, 3], 1);
        t.insert(&[1, 2, 4], 2);
        t.insert(&[1, 2, 3], 3);
        t.remove(&[1, 2, 3], 1);
        assert_eq!(t.longest_prefix(&[1, 2, 3]), Some((3, 3)));
        t.remove(&[1, 2, 3], 3);
        assert_eq!(t.longest_prefix(&[1, 2, 3]), Some((2, 2)));
        t.remove(&[1, 2, 4], 2);
        assert_eq!(t.longest_prefix(&[1, 2, 3]), None);
        assert!(t.is_empty());
        // Freed nodes are reused.
        t.insert(&[5, 6], 4);
        assert_eq!(t.longest_prefix(&[5, 6]), Some((2, 4)));
    }
}
