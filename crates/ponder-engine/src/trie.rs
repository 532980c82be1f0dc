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
