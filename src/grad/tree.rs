//! The items of a plan as one sequence with a tree-shaped attention mask: every distinct
//! prefix (BOS, chat header, soft rows, an instruction shared by several items) appears once,
//! and each position attends to its ancestors only, at the position it has in its own
//! sequence. The differentiable pass thus computes each prefix once, as the engine's trie
//! does, in a single forward call per chunk of items.

use std::collections::HashMap;

use anyhow::{bail, Result};

use crate::engine::{label_prefixes, next_label_tokens, PlannedItem};
use crate::llama::Token;

/// A position's input: a token, or row r of the soft prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// A token (fed as its scaled embedding row, as the engine does).
    Tok(Token),
    /// A soft-prompt row.
    Soft(usize),
}

/// A place whose next-token distribution is read.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// Item, as an index into the chunk's items.
    pub item: usize,
    /// Label tokens already written at this place (empty: right after the answer cue).
    pub prefix: Vec<Token>,
    /// Index of the position in the sequence.
    pub at: usize,
    /// Tokens whose probability is needed here.
    pub next: Vec<Token>,
}

/// Items flattened into one tree-shaped sequence.
#[derive(Debug, Clone)]
pub struct TreeSeq {
    /// Inputs, parents before children.
    pub units: Vec<Unit>,
    /// Position of each unit in its own sequence (its depth).
    pub pos: Vec<usize>,
    /// Parent of each unit.
    pub parent: Vec<Option<usize>>,
    /// Places to read, grouped by item in item order.
    pub slots: Vec<Slot>,
    /// Label tokens per item (as in the plan).
    pub labels: Vec<Vec<Vec<Token>>>,
    /// Sum of the full sequence lengths (what the same answers cost without sharing).
    pub logical: usize,
}

impl TreeSeq {
    /// Flatten `items` with `rows` soft rows between each item's `before` and `after` tokens.
    ///
    /// # Errors
    /// An item without options.
    pub fn build(items: &[&PlannedItem], rows: usize) -> Result<TreeSeq> {
        let mut t = TreeSeq {
            units: Vec::new(),
            pos: Vec::new(),
            parent: Vec::new(),
            slots: Vec::new(),
            labels: Vec::new(),
            logical: 0,
        };
        let mut children: HashMap<(Option<usize>, Unit), usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            if item.labels.is_empty() {
                bail!("item {}: no options", item.id);
            }
            let base: Vec<Unit> = item
                .before
                .iter()
                .map(|&t| Unit::Tok(t))
                .chain((0..rows).map(Unit::Soft))
                .chain(item.after.iter().map(|&t| Unit::Tok(t)))
                .collect();
            t.logical += base.len();
            for prefix in label_prefixes(&item.labels) {
                let next = next_label_tokens(&item.labels, &prefix);
                let mut at: Option<usize> = None;
                for u in base.iter().copied().chain(prefix.iter().map(|&x| Unit::Tok(x))) {
                    at = Some(*children.entry((at, u)).or_insert_with(|| {
                        let depth = at.map_or(0, |p| t.pos[p] + 1);
                        t.units.push(u);
                        t.pos.push(depth);
                        t.parent.push(at);
                        t.units.len() - 1
                    }));
                }
                let Some(at) = at else { bail!("item {}: empty sequence", item.id) };
                t.slots.push(Slot { item: i, prefix, at, next });
            }
            t.labels.push(item.labels.clone());
        }
        Ok(t)
    }

    /// Number of positions.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Additive attention mask, row-major `[len, len]`: 0 where the query may see the key (an
    /// ancestor or itself, within `window` positions when given), minus infinity elsewhere.
    pub fn mask(&self, window: Option<usize>) -> Vec<f32> {
        let n = self.len();
        let mut m = vec![f32::NEG_INFINITY; n * n];
        for q in 0..n {
            let mut k = Some(q);
            while let Some(kk) = k {
                // llama.cpp's standard sliding window masks a key once p_q - p_k >= window.
                if window.is_none_or(|w| self.pos[q] - self.pos[kk] < w) {
                    m[q * n + kk] = 0.0;
                }
                k = self.parent[kk];
            }
        }
        m
    }

    /// Whether any label needs the next-token distribution normalised over the whole
    /// vocabulary (a label of several tokens, or one that another label extends); otherwise
    /// option probabilities are a softmax over the label tokens' logits alone.
    pub fn needs_full_norm(&self) -> bool {
        self.labels.iter().any(|ls| ls.iter().any(|l| l.len() != 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, before: &[Token], after: &[Token], labels: &[&[Token]]) -> PlannedItem {
        PlannedItem {
            id: id.into(),
            before: before.to_vec(),
            after: after.to_vec(),
            labels: labels.iter().map(|l| l.to_vec()).collect(),
        }
    }

    #[test]
    fn shared_prefixes_appear_once_and_positions_are_depths() {
        let a = item("a", &[1, 2], &[5, 6], &[&[10], &[11]]);
        let b = item("b", &[1, 2], &[5, 7], &[&[10], &[11], &[10, 12]]);
        let t = TreeSeq::build(&[&a, &b], 2).unwrap();
        // 1 2 S0 S1 5 shared; then 6 (a) and 7 (b), and b's "10" prefix.
        assert_eq!(t.len(), 5 + 1 + 1 + 1);
        assert_eq!(t.logical, 6 + 6);
        assert_eq!(t.pos, vec![0, 1, 2, 3, 4, 5, 5, 6]);
        assert_eq!(t.slots.len(), 3);
        assert_eq!(t.slots[0].next, vec![10, 11]);
        assert_eq!((t.slots[2].prefix.clone(), t.slots[2].next.clone()), (vec![10], vec![12]));
        assert!(t.needs_full_norm());
        let m = t.mask(None);
        let n = t.len();
        // a's cue (index 5) sees 0..=5 but not b's branch (6).
        assert!((0..=5).all(|k| m[5 * n + k] == 0.0));
        assert_eq!(m[5 * n + 6], f32::NEG_INFINITY);
        // b's "10" (index 7) sees b's 7 (index 6) and the shared token 5 (index 4), not a's 6.
        assert_eq!(m[7 * n + 5], f32::NEG_INFINITY);
        assert_eq!((m[7 * n + 6], m[7 * n + 4]), (0.0, 0.0));
        // A window of 2 positions: one back is seen, two back is not.
        let w = t.mask(Some(2));
        assert_eq!(w[7 * n + 6], 0.0);
        assert_eq!(w[7 * n + 4], f32::NEG_INFINITY);
    }
}
