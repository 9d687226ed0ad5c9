//! The scoring engine: for many soft prompts and many survey items, the probability of every
//! answer option, computed with llama.cpp.
//!
//! How the work is shared. Every (prompt, item) is a sequence of units, tokens or soft-prompt
//! rows: `before` tokens, the T soft rows, `after` tokens ending in the answer cue, then the
//! label prefixes whose next-token distribution is needed. All sequences of one prompt form a
//! trie, so every distinct prefix (the instruction, an item stem shared by several items) is
//! computed once. The prompt-independent head of the trie (BOS, chat header, ...) is computed
//! once per engine and kept in KV sequence 0. The rest of a prompt's trie is decoded in waves:
//! all nodes whose parent is done go into the same `llama_decode` calls, each in its own KV
//! sequence, with branches made by copying the parent's KV range (a unified KV buffer makes
//! that a relabelling, not a copy).
//!
//! Two schedules. Floating-point results of a decode depend slightly on what else is in the
//! batch. The exact schedule (`prompt_group` 1, `--exact`) processes each prompt alone with
//! the same schedule, so its answers are bit-identical whether it is scored alone or among
//! others, in any order. The batched schedule puts the tries of `prompt_group` prompts side by
//! side (each prompt's branches in their own KV sequences) and streams them through decode
//! calls that are each filled to the batch size: fewer, fuller `llama_decode` calls, which is
//! what keeps a GPU busy, with only about two prompts' KV cells live at a time. A prompt's
//! answers then move slightly with its company; README ("Exact and batched scoring") gives the
//! measured drift.

use std::collections::{BTreeSet, HashMap, VecDeque};

pub mod generation;
pub mod sampler;

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use crate::data::survey::Item;
use crate::llama::{Context, ContextParams, EmbdBatch, Model, Pos, SeqId, Token, TokenBatch};
use crate::prompt::render::{self, Layout};
use crate::prompt::softprompt::SoftPrompt;
use crate::score::item_score::ItemScore;

/// Most KV cells of one piece of a plan too large for the context: short pieces keep each
/// micro-batch's attention span short (CultureSPA's P3 on WVS-7 needs 72,305 cells whole).
const PIECE_CELLS: usize = 4096;

/// Engine settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct EngineConfig {
    /// CPU threads for llama.cpp.
    pub threads: usize,
    /// Most units per decode call.
    pub batch: usize,
    /// Most KV sequences alive at once (2 to 256).
    pub seq_max: usize,
    /// Upper bound on the context (KV cells) the engine may allocate; None = the model's
    /// training context.
    pub max_ctx: Option<usize>,
    /// Prompts whose tries share decode calls: 1 = the exact per-prompt schedule.
    #[serde(default = "one")]
    pub prompt_group: usize,
    /// Most units in one wave of a group of prompts (`prompt_group` > 1); None: a whole
    /// decode call (`batch`).
    #[serde(default)]
    pub wave: Option<usize>,
}

/// Wave of a group of prompts on a CPU. CPU matmuls already run at full speed on ~100 rows,
/// so a wider wave only brings more prompts into flight, whose KV cells every query then
/// attends over: waves of 256 and 512 measured slower than exact at the 1B shape, 128 as fast
/// (README, "Exact and batched scoring").
pub const CPU_WAVE: usize = 128;

fn one() -> usize {
    1
}

impl EngineConfig {
    /// Most units in one wave of a group of prompts: `wave`, within a decode call.
    pub fn wave_units(&self) -> usize {
        self.wave.map_or(self.batch, |w| w.min(self.batch))
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        EngineConfig { threads, batch: 512, seq_max: 128, max_ctx: None, prompt_group: 1, wave: None }
    }
}

/// One item, rendered and tokenized.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedItem {
    /// Item id.
    pub id: String,
    /// Tokens before the soft prompt (BOS, chat header, ...).
    pub before: Vec<Token>,
    /// Tokens after the soft prompt, ending with the answer cue.
    pub after: Vec<Token>,
    /// Token sequence of each option's label (its code written out), in option order.
    pub labels: Vec<Vec<Token>>,
}

/// Items rendered for one layout; reusable across calls.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Unique id, so schedules can be cached per plan.
    id: u64,
    /// The items.
    pub items: Vec<PlannedItem>,
    /// Rendered text of the first item with `[SOFT PROMPT: T rows]` in place, for `--show-prompt`.
    pub example: String,
    /// Whether the model's chat template was used.
    pub chat: bool,
}

impl Plan {
    /// Render and tokenize items with a layout.
    ///
    /// # Errors
    /// If the layout asks for a chat template the model lacks, or tokenization fails.
    pub fn new(model: &Model, items: &[&Item], layout: &Layout) -> Result<Plan> {
        let chat = render::use_chat(model, layout.template)?;
        let bos = model.bos();
        let mut planned = Vec::with_capacity(items.len());
        let mut example = String::new();
        for (n, item) in items.iter().enumerate() {
            let (system, user) = render::messages(layout, item);
            let text = render::conversation(model, chat, system.as_deref(), &user)?;
            if n == 0 {
                example = text.replace(render::SOFT_MARKER, "[SOFT PROMPT: T rows]");
            }
            let (a, b) = render::split_at_marker(&text);
            let mut before = model.tokenize(&a, false, true)?;
            if model.add_bos() {
                if let Some(bos) = bos {
                    if before.first() != Some(&bos) {
                        before.insert(0, bos);
                    }
                }
            }
            let after = if b.is_empty() { Vec::new() } else { model.tokenize(&b, false, true)? };
            let labels = (0..item.n_options())
                .map(|k| model.tokenize(&item.code(k).to_string(), false, false))
                .collect::<Result<Vec<_>, _>>()?;
            planned.push(PlannedItem { id: item.id.clone(), before, after, labels });
        }
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Plan { id, items: planned, example, chat })
    }
}

impl Plan {
    /// The plan for a range of its items (a new plan id).
    pub fn subset(plan: &Plan, range: std::ops::Range<usize>) -> Plan {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 40);
        Plan {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            items: plan.items[range].to_vec(),
            example: plan.example.clone(),
            chat: plan.chat,
        }
    }
}

/// Work counters, for benchmarks and run histories.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Units (tokens and soft rows) actually decoded.
    pub computed: u64,
    /// Units the same answers would take without any sharing (sum of full sequence lengths).
    pub logical: u64,
    /// `llama_decode` calls.
    pub decode_calls: u64,
    /// (prompt, item) pairs scored.
    pub pairs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Unit {
    Tok(Token),
    Soft(u32),
}

/// A compressed trie node: a run of units of one kind, decoded in one KV sequence.
#[derive(Debug, Clone)]
struct Node {
    units: Vec<Unit>,
    /// Logit slot for units that need their next-token distribution, by offset in `units`.
    want: Vec<(usize, usize)>,
    start: Pos,
    children: Vec<usize>,
    /// Which prompt of a batched group the node's soft rows come from (0 when exact).
    copy: usize,
}

impl Node {
    fn end(&self) -> Pos {
        self.start + self.units.len() as Pos
    }
    fn has_soft(&self) -> bool {
        matches!(self.units.first(), Some(Unit::Soft(_)))
    }
}

/// What to read at a logit slot: which item, which label prefix.
#[derive(Debug, Clone)]
struct Slot {
    item: usize,
    prefix: Vec<Token>,
    /// Tokens whose log-probability is needed here.
    next: Vec<Token>,
}

/// The per-prompt schedule for a plan and a soft-prompt length.
#[derive(Debug, Clone)]
struct Schedule {
    /// Prompt-independent head, kept in KV sequence 0.
    head: Vec<Token>,
    nodes: Vec<Node>,
    /// Children of the head.
    roots: Vec<usize>,
    slots: Vec<Slot>,
    /// KV cells one prompt needs beyond the head.
    cells: usize,
    /// With a soft prompt every unit after the head is fed as an embedding row (tokens as their
    /// scaled embedding rows, which the token path reproduces exactly), so soft rows and the
    /// text after them share decode calls instead of alternating between two batch kinds.
    all_embd: bool,
    /// Scaled embedding rows of the tokens fed as embeddings.
    token_rows: HashMap<Token, Vec<f32>>,
    logical: u64,
}

impl Schedule {
    fn build(plan: &Plan, rows: usize, gen: bool) -> Schedule {
        let all_embd = rows > 0;
        // Uncompressed trie: per node its unit, children by unit, and wanted slots.
        struct Raw {
            unit: Option<Unit>,
            children: HashMap<Unit, usize>,
            order: Vec<usize>,
            want: Option<usize>,
        }
        let mut raw = vec![Raw { unit: None, children: HashMap::new(), order: Vec::new(), want: None }];
        let mut slots = Vec::new();
        let mut logical = 0u64;
        for (i, item) in plan.items.iter().enumerate() {
            let base: Vec<Unit> = item
                .before
                .iter()
                .map(|&t| Unit::Tok(t))
                .chain((0..rows as u32).map(Unit::Soft))
                .chain(item.after.iter().map(|&t| Unit::Tok(t)))
                .collect();
            logical += base.len() as u64;
            let prefixes: Vec<Vec<Token>> = if gen {
                // Generation reads the whole next-token distribution at the cue only.
                vec![Vec::new()]
            } else {
                label_prefixes(&item.labels)
            };
            for p in prefixes {
                let next = next_label_tokens(&item.labels, &p);
                let slot = slots.len();
                slots.push(Slot { item: i, prefix: p.clone(), next });
                let mut node = 0;
                for u in base.iter().copied().chain(p.iter().map(|&t| Unit::Tok(t))) {
                    node = match raw[node].children.get(&u) {
                        Some(&c) => c,
                        None => {
                            let c = raw.len();
                            raw.push(Raw {
                                unit: Some(u),
                                children: HashMap::new(),
                                order: Vec::new(),
                                want: None,
                            });
                            raw[node].children.insert(u, c);
                            raw[node].order.push(c);
                            c
                        }
                    };
                }
                raw[node].want = Some(slot);
            }
        }
        // Head: the single-child chain of tokens from the root that needs no logits.
        let mut head = Vec::new();
        let mut at = 0;
        while raw[at].order.len() == 1 {
            let c = raw[at].order[0];
            match raw[c].unit {
                Some(Unit::Tok(t)) if raw[c].want.is_none() => {
                    head.push(t);
                    at = c;
                }
                _ => break,
            }
        }
        // Compress the rest into runs of one kind that end at a branch.
        let mut nodes: Vec<Node> = Vec::new();
        let mut roots = Vec::new();
        let mut cells = 0usize;
        // (raw node to start a run at, parent compressed node, start position)
        let mut stack: Vec<(usize, Option<usize>, Pos)> =
            raw[at].order.iter().rev().map(|&c| (c, None, head.len() as Pos)).collect();
        while let Some((first, parent, start)) = stack.pop() {
            let id = nodes.len();
            let kind_soft = matches!(raw[first].unit, Some(Unit::Soft(_)));
            let mut node = Node { units: Vec::new(), want: Vec::new(), start, children: Vec::new(), copy: 0 };
            let mut r = first;
            loop {
                node.units.push(raw[r].unit.expect("non-root"));
                if let Some(s) = raw[r].want {
                    node.want.push((node.units.len() - 1, s));
                }
                let next = &raw[r].order;
                if next.len() == 1
                    && (all_embd || matches!(raw[next[0]].unit, Some(Unit::Soft(_))) == kind_soft)
                {
                    r = next[0];
                } else {
                    break;
                }
            }
            cells += node.units.len();
            let end = node.end();
            for &c in raw[r].order.iter().rev() {
                stack.push((c, Some(id), end));
            }
            match parent {
                Some(p) => nodes[p].children.push(id),
                None => roots.push(id),
            }
            nodes.push(node);
        }
        // Children were pushed in reverse stack order; restore trie order for determinism.
        for n in &mut nodes {
            n.children.sort_unstable();
        }
        roots.sort_unstable();
        Schedule { head, nodes, roots, slots, cells, logical, all_embd, token_rows: HashMap::new() }
    }

    /// The schedule of `copies` prompts side by side: copy c's nodes read prompt c's rows and
    /// its slots are `c * slots..(c + 1) * slots`. Each copy has its own sequences, so the
    /// copies share decode calls but not KV.
    fn replicate(&self, copies: usize) -> Schedule {
        let (n, m) = (self.nodes.len(), self.slots.len());
        let mut nodes = Vec::with_capacity(n * copies);
        let mut roots = Vec::with_capacity(self.roots.len() * copies);
        for c in 0..copies {
            nodes.extend(self.nodes.iter().map(|node| Node {
                units: node.units.clone(),
                want: node.want.iter().map(|&(o, w)| (o, c * m + w)).collect(),
                start: node.start,
                children: node.children.iter().map(|k| c * n + k).collect(),
                copy: c,
            }));
            roots.extend(self.roots.iter().map(|k| c * n + k));
        }
        Schedule {
            head: self.head.clone(),
            nodes,
            roots,
            slots: (0..copies).flat_map(|_| self.slots.iter().cloned()).collect(),
            cells: self.cells * copies,
            all_embd: self.all_embd,
            token_rows: self.token_rows.clone(),
            logical: self.logical * copies as u64,
        }
    }
}

/// The next capped wave: ready nodes of the group's first prompts first, deepest first within
/// a prompt (then in ready order), each taken while the wave stays within `cap` units (a node
/// larger than `cap` goes alone); the rest stay ready, in order. Deterministic, so a group's
/// answers are reproducible.
fn take_wave(ready: &mut VecDeque<(usize, SeqId)>, s: &Schedule, cap: usize) -> Vec<(usize, SeqId)> {
    let mut order: Vec<usize> = (0..ready.len()).collect();
    order.sort_by_key(|&i| {
        let node = &s.nodes[ready[i].0];
        (node.copy, std::cmp::Reverse(node.start), i)
    });
    let mut take = vec![false; ready.len()];
    let mut units = 0;
    for i in order {
        let n = s.nodes[ready[i].0].units.len();
        if units > 0 && units + n > cap {
            continue;
        }
        take[i] = true;
        units += n;
        if units >= cap {
            break;
        }
    }
    let mut wave = Vec::new();
    let mut rest = VecDeque::new();
    for (i, r) in ready.drain(..).enumerate() {
        if take[i] {
            wave.push(r);
        } else {
            rest.push_back(r);
        }
    }
    *ready = rest;
    // In trie order (copy by copy): neighbours in a decode call then share their ancestors'
    // KV cells, so each attention tile of queries touches few tiles of keys.
    wave.sort_unstable_by_key(|&(n, _)| n);
    wave
}

/// Batched scoring of soft prompts on survey items, on one llama.cpp context.
pub struct Engine<'m> {
    model: &'m Model,
    config: EngineConfig,
    ctx: Option<Context<'m>>,
    ctx_cells: usize,
    /// The head currently held in KV sequence 0.
    held_head: Option<Vec<Token>>,
    /// By (plan, rows, generation, copies).
    schedules: HashMap<(u64, usize, bool, usize), Schedule>,
    /// Plans too large for the context, cut into pieces: by (plan, rows).
    pieces: HashMap<(u64, usize), Vec<Plan>>,
    stats: EngineStats,
}

impl<'m> Engine<'m> {
    /// An engine on a loaded model. The context is created on first use, sized for the work.
    pub fn new(model: &'m Model, config: EngineConfig) -> Result<Self> {
        if !(2..=256).contains(&config.seq_max) {
            bail!("engine seq_max {}: expected 2 to 256", config.seq_max);
        }
        if config.batch < 1 {
            bail!("engine batch {}: expected at least 1", config.batch);
        }
        if config.wave == Some(0) {
            bail!("engine wave 0: expected at least 1");
        }
        if !(1..=256).contains(&config.prompt_group) {
            bail!("--batch-prompts {}: expected 1 to 256", config.prompt_group);
        }
        Ok(Engine {
            model,
            config,
            ctx: None,
            ctx_cells: 0,
            held_head: None,
            schedules: HashMap::new(),
            pieces: HashMap::new(),
            stats: EngineStats::default(),
        })
    }

    /// The model.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Prompts per decode group (1: the exact schedule).
    pub fn prompt_group(&self) -> usize {
        self.config.prompt_group
    }

    /// Work done so far.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// KV cells (tokens of context) a plan needs with soft prompts of `rows` rows.
    pub fn cells_needed(&mut self, plan: &Plan, rows: usize) -> usize {
        let s = self.schedule(plan, rows, false);
        s.head.len() + s.cells
    }

    /// The schedule of `copies` prompts of `rows` rows scored together.
    fn schedule_group(&mut self, plan: &Plan, rows: usize, copies: usize) -> &Schedule {
        if copies == 1 {
            return self.schedule(plan, rows, false);
        }
        let key = (plan.id, rows, false, copies);
        if !self.schedules.contains_key(&key) {
            let one = self.schedule(plan, rows, false).replicate(copies);
            self.schedules.insert(key, one);
        }
        &self.schedules[&key]
    }

    /// `prompt_group`, or fewer prompts where that many would not fit in the context limit
    /// (each prompt of a group keeps its own KV cells). Fixed by the plan, the prompt length
    /// and the settings, so the grouping stays reproducible.
    fn group_that_fits(&mut self, plan: &Plan, rows: usize) -> usize {
        let limit = self.config.max_ctx.unwrap_or(self.model.n_ctx_train());
        let s = self.schedule(plan, rows, false);
        let fit = if limit == 0 { usize::MAX } else { limit.saturating_sub(s.head.len()) / s.cells.max(1) };
        self.config.prompt_group.min(fit).max(1)
    }

    /// A plan whose trie does not fit the context limit, cut into runs of consecutive items
    /// of at most [`PIECE_CELLS`] cells each (a piece's trie is at most the sum of its items'
    /// own); None when the plan fits, which is then scored whole as before. Fixed by the plan
    /// and the settings, so the pieces (hence the answers) are reproducible.
    fn pieces(&mut self, plan: &Plan, rows: usize) -> Option<Vec<Plan>> {
        // Looked up first: the whole plan's schedule may have left the schedule cache.
        if let Some(p) = self.pieces.get(&(plan.id, rows)) {
            return Some(p.clone());
        }
        let limit = self.config.max_ctx.unwrap_or(self.model.n_ctx_train());
        if limit == 0 || plan.items.len() < 2 || self.cells_needed(plan, rows) <= limit {
            return None;
        }
        let target = limit.min(PIECE_CELLS);
        let (mut out, mut start, mut used) = (Vec::new(), 0, 0);
        for i in 0..plan.items.len() {
            let one = Schedule::build(&Plan::subset(plan, i..i + 1), rows, false);
            let cells = one.head.len() + one.cells;
            if i > start && used + cells > target {
                out.push(Plan::subset(plan, start..i));
                (start, used) = (i, 0);
            }
            used += cells;
        }
        out.push(Plan::subset(plan, start..plan.items.len()));
        self.pieces.insert((plan.id, rows), out.clone());
        Some(out)
    }

    fn schedule(&mut self, plan: &Plan, rows: usize, gen: bool) -> &Schedule {
        let key = (plan.id, rows, gen, 1);
        let model = self.model;
        self.schedules.entry(key).or_insert_with(|| {
            let mut s = Schedule::build(plan, rows, gen);
            if s.all_embd {
                let mut toks: Vec<Token> = s
                    .nodes
                    .iter()
                    .flat_map(|n| n.units.iter())
                    .filter_map(|u| if let Unit::Tok(t) = u { Some(*t) } else { None })
                    .collect();
                toks.sort_unstable();
                toks.dedup();
                // A row that cannot be read leaves the token out; decoding then reports it.
                if let Ok(rows) = model.token_embeddings().scaled_rows(&toks) {
                    let w = model.n_embd_inp();
                    s.token_rows = toks
                        .iter()
                        .enumerate()
                        .map(|(k, t)| (*t, rows[k * w..(k + 1) * w].to_vec()))
                        .collect();
                }
            }
            s
        })
    }

    /// Answer distributions for every prompt (outer) and item (inner, plan order).
    ///
    /// All prompts must have the model's width. With `prompt_group` 1 each prompt is scored
    /// with the same schedule, so its answers do not depend on the other prompts or their
    /// order; otherwise consecutive prompts of the same length are scored `prompt_group` at a
    /// time, and the grouping (hence the answers) is fixed by the order of `prompts`.
    ///
    /// # Errors
    /// Width mismatch, a context that cannot be created, decode failures.
    pub fn score(&mut self, plan: &Plan, prompts: &[&SoftPrompt]) -> Result<Vec<Vec<ItemScore>>> {
        let n_embd = self.model.n_embd_inp();
        let mut by_rows: Vec<usize> = Vec::new();
        for p in prompts {
            if p.n_embd() != n_embd && p.rows() > 0 {
                bail!("soft prompt is {} wide but the model's embeddings are {} wide", p.n_embd(), n_embd);
            }
            if !by_rows.contains(&p.rows()) {
                by_rows.push(p.rows());
            }
        }
        // A plan larger than the context is scored piece by piece (each piece as a plan).
        let longest = prompts.iter().map(|p| p.rows()).max().unwrap_or(0);
        if let Some(pieces) = self.pieces(plan, longest) {
            let mut out = vec![Vec::with_capacity(plan.items.len()); prompts.len()];
            for piece in &pieces {
                for (o, sc) in out.iter_mut().zip(self.score(piece, prompts)?) {
                    o.extend(sc);
                }
            }
            return Ok(out);
        }
        // Schedules are cached per (plan, rows); drop them all if the cache grows.
        if self.schedules.len() > 16 {
            self.schedules.clear();
        }
        let mut out = Vec::with_capacity(prompts.len());
        let mut at = 0;
        while at < prompts.len() {
            let rows = prompts[at].rows();
            let group = self.group_that_fits(plan, rows);
            let mut end = at + 1;
            while end < prompts.len() && end - at < group && prompts[end].rows() == rows {
                end += 1;
            }
            let group = &prompts[at..end];
            let sched = self.schedule_group(plan, rows, group.len()).clone();
            self.ensure_context(&sched)?;
            // A group's waves are capped at `wave_units`, within one decode call (see `run_schedule`).
            let cap = (group.len() > 1).then(|| self.config.wave_units());
            let (logp, _, _) = self.run_schedule(&sched, group, false, cap)?;
            self.stats.pairs += (plan.items.len() * group.len()) as u64;
            let per = sched.slots.len() / group.len();
            let single = self.schedule(plan, rows, false);
            for c in 0..group.len() {
                out.push(item_scores(plan, single, &logp[c * per..(c + 1) * per]));
            }
            at = end;
        }
        Ok(out)
    }

    fn ensure_context(&mut self, s: &Schedule) -> Result<()> {
        let need = s.head.len() + s.cells;
        if self.ctx.is_none() || self.ctx_cells < need {
            self.ctx = None;
            // Room for the largest plan seen, rounded up; llama.cpp pads to 256 anyway.
            let cells = need.max(self.ctx_cells).div_ceil(256) * 256;
            let limit = self.config.max_ctx.unwrap_or(self.model.n_ctx_train());
            if limit > 0 && need > limit {
                let by = if self.config.max_ctx.is_some() {
                    "the context limit allows"
                } else {
                    "the model was trained on"
                };
                bail!(
                    "the layout needs {need} tokens of context but {by} {limit}; \
                     shorten the soft prompt or the prompt text"
                );
            }
            let params = ContextParams {
                n_ctx: cells as u32,
                // With a unified KV buffer llama.cpp reserves outputs for 256 sequences and
                // asserts that n_batch covers them; calls still carry at most `batch` units.
                n_batch: self.config.batch.max(256) as u32,
                n_ubatch: self.config.batch as u32,
                n_seq_max: self.config.seq_max as u32,
                n_threads: self.config.threads as i32,
                n_threads_batch: self.config.threads as i32,
                kv_unified: true,
                flash_attn: None,
            };
            self.ctx = Some(Context::new(self.model, &params).context("creating the llama.cpp context")?);
            self.ctx_cells = cells;
            self.held_head = None;
        }
        if self.held_head.as_deref() != Some(&s.head[..]) {
            let ctx = self.ctx.as_mut().expect("context");
            ctx.clear();
            self.held_head = None;
            let mut batch = TokenBatch::new(self.config.batch, 1)?;
            for (c, chunk) in s.head.chunks(self.config.batch).enumerate() {
                batch.clear();
                batch.push_seq(chunk, (c * self.config.batch) as Pos, &[0], false)?;
                ctx.decode_tokens(&batch)?;
                self.stats.decode_calls += 1;
                self.stats.computed += chunk.len() as u64;
            }
            self.held_head = Some(s.head.clone());
        }
        Ok(())
    }

    /// Decode a prompt's trie. Returns log-probabilities per slot, the most probable next token
    /// per slot, and with `keep` the (sequence, next position) holding each slot's context,
    /// left alive for generation (the caller releases them).
    ///
    /// Without `cap` a wave is every ready node (the exact schedule). With `cap` a wave is up
    /// to `cap` units (a full decode call on a GPU, [`CPU_WAVE`] on a CPU): the ready nodes of the group's earliest unfinished prompt, deepest
    /// first, topped up with the next prompts' nodes ([`take_wave`]). Prompts stream through
    /// the group, so the live KV cells stay about two prompts' tries (not all of them at once)
    /// and a call's neighbouring queries share their ancestors' cells. That matters on a CPU:
    /// every call's attention converts the mask of each query tile against every KV tile up to
    /// the highest cell in use, and packs every KV tile a query of the tile can see.
    #[allow(clippy::type_complexity)]
    fn run_schedule(
        &mut self,
        s: &Schedule,
        prompts: &[&SoftPrompt],
        keep: bool,
        cap: Option<usize>,
    ) -> Result<(Vec<HashMap<Token, f64>>, Vec<Token>, Vec<(SeqId, Pos)>)> {
        let ctx = self.ctx.as_mut().expect("context");
        let n_embd = self.model.n_embd_inp();
        let batch_cap = self.config.batch;
        let mut tok_batch = TokenBatch::new(batch_cap, 1)?;
        let mut emb_batch = EmbdBatch::new(batch_cap, n_embd, 1)?;
        // log p(next) per slot and token.
        let mut logp: Vec<HashMap<Token, f64>> = vec![HashMap::new(); s.slots.len()];
        let mut best: Vec<Token> = vec![0; s.slots.len()];
        let mut kept: Vec<(SeqId, Pos)> = vec![(-1, 0); s.slots.len()];
        let mut kept_seqs: BTreeSet<SeqId> = BTreeSet::new();

        let mut free: BTreeSet<SeqId> = (1..self.config.seq_max as SeqId).collect();
        let mut ready: VecDeque<(usize, SeqId)> = VecDeque::new();
        // Nodes done whose children still need a sequence: (node, holder sequence, children left).
        let mut waiting: VecDeque<(usize, SeqId, Vec<usize>)> = VecDeque::new();
        // Per sequence: how many waiting entries hold it, and whether its path has ended.
        let mut holds: HashMap<SeqId, usize> = HashMap::new();
        let mut ended: BTreeSet<SeqId> = BTreeSet::new();
        let head_len = s.head.len() as Pos;
        waiting.push_back((usize::MAX, 0, s.roots.clone()));

        let release = |ctx: &mut Context<'m>, seq: SeqId, free: &mut BTreeSet<SeqId>| -> Result<()> {
            ctx.seq_rm(seq, -1, -1)?;
            free.insert(seq);
            Ok(())
        };

        loop {
            // Give waiting children sequences, copying the parent's KV range.
            while let Some((node, holder, mut kids)) = waiting.pop_front() {
                let end = if node == usize::MAX { head_len } else { s.nodes[node].end() };
                while !kids.is_empty() {
                    let Some(&seq) = free.iter().next() else {
                        // No free sequence: the last child may take over its ended holder.
                        if kids.len() == 1 && holder != 0 && holds[&holder] == 1 && ended.remove(&holder) {
                            ctx.seq_rm(holder, end, -1)?;
                            holds.insert(holder, 0);
                            ready.push_back((kids.remove(0), holder));
                            continue;
                        }
                        break;
                    };
                    free.remove(&seq);
                    ctx.seq_cp(holder, seq, -1, end)?;
                    ready.push_back((kids.remove(0), seq));
                }
                if kids.is_empty() {
                    if holder != 0 && holds[&holder] > 0 {
                        let h = holds.get_mut(&holder).expect("held");
                        *h -= 1;
                        if *h == 0 && ended.remove(&holder) {
                            release(ctx, holder, &mut free)?;
                        }
                    }
                } else {
                    waiting.push_front((node, holder, kids));
                    break;
                }
            }
            if ready.is_empty() {
                if waiting.is_empty() {
                    break;
                }
                bail!("engine scheduling stalled: no free KV sequence (raise seq_max)");
            }
            // One wave: every ready node, embedding runs first, then tokens, in calls of `batch` units.
            let wave: Vec<(usize, SeqId)> = match cap {
                None => ready.drain(..).collect(),
                Some(cap) => take_wave(&mut ready, s, cap),
            };
            for soft in [true, false] {
                let mut entries: Vec<(Unit, Pos, SeqId, Option<usize>, usize)> = Vec::new();
                for &(n, seq) in wave.iter().filter(|(n, _)| (s.all_embd || s.nodes[*n].has_soft()) == soft) {
                    let node = &s.nodes[n];
                    for (k, u) in node.units.iter().enumerate() {
                        let want = node.want.iter().find(|(o, _)| *o == k).map(|w| w.1);
                        entries.push((*u, node.start + k as Pos, seq, want, node.copy));
                    }
                }
                for chunk in entries.chunks(batch_cap) {
                    let mut wanted: Vec<(usize, usize)> = Vec::new();
                    if soft {
                        emb_batch.clear();
                        for &(u, pos, seq, want, copy) in chunk {
                            let row = match u {
                                Unit::Soft(r) => prompts[copy].row(r as usize),
                                Unit::Tok(t) => s
                                    .token_rows
                                    .get(&t)
                                    .ok_or_else(|| anyhow::anyhow!("no embedding row for token {t}"))?,
                            };
                            let i = emb_batch.push(row, pos, &[seq], want.is_some())?;
                            if let Some(w) = want {
                                wanted.push((i, w));
                            }
                        }
                        ctx.decode_embd(&emb_batch)?;
                    } else {
                        tok_batch.clear();
                        for &(u, pos, seq, want, _) in chunk {
                            let Unit::Tok(t) = u else { unreachable!("token run holds tokens") };
                            let i = tok_batch.push(t, pos, &[seq], want.is_some())?;
                            if let Some(w) = want {
                                wanted.push((i, w));
                            }
                        }
                        ctx.decode_tokens(&tok_batch)?;
                    }
                    self.stats.decode_calls += 1;
                    self.stats.computed += chunk.len() as u64;
                    for (i, slot) in wanted {
                        let logits = ctx.logits(i)?;
                        best[slot] = argmax(logits);
                        let lse = log_sum_exp(logits);
                        for &t in &s.slots[slot].next {
                            logp[slot].insert(t, f64::from(logits[t as usize]) - lse);
                        }
                    }
                }
            }
            // Children: the first continues in the node's sequence, the others wait for one.
            for &(n, seq) in &wave {
                let kids = &s.nodes[n].children;
                if keep {
                    for &(_, slot) in &s.nodes[n].want {
                        kept[slot] = (seq, s.nodes[n].end());
                        kept_seqs.insert(seq);
                    }
                }
                if kids.is_empty() {
                    if keep && kept_seqs.contains(&seq) {
                        continue;
                    }
                    if holds.get(&seq).copied().unwrap_or(0) > 0 {
                        ended.insert(seq);
                    } else {
                        release(ctx, seq, &mut free)?;
                    }
                    continue;
                }
                ready.push_back((kids[0], seq));
                if kids.len() > 1 {
                    *holds.entry(seq).or_default() += 1;
                    waiting.push_back((n, seq, kids[1..].to_vec()));
                }
            }
        }
        // Everything but the head (and kept sequences) is released.
        debug_assert_eq!(free.len() + kept_seqs.len(), self.config.seq_max - 1);
        self.stats.logical += s.logical;
        Ok((logp, best, kept))
    }

    /// Greedy generation after each item's answer cue, batched over items: the text the model
    /// writes (up to `max_tokens` tokens, ending at a line break, the end-of-text token, or the
    /// end of the first number). Used by `--answers generate`, which parses the first integer
    /// as CultureSPA does.
    ///
    /// # Errors
    /// As [`Engine::score`].
    pub fn generate(&mut self, plan: &Plan, prompt: &SoftPrompt, max_tokens: usize) -> Result<Vec<String>> {
        let n_embd = self.model.n_embd_inp();
        prompt.check_width(n_embd, "soft prompt")?;
        let mut texts = Vec::with_capacity(plan.items.len());
        // Each item keeps a sequence alive while generating: take items in chunks that leave
        // room for the trie's branches.
        let chunk = (self.config.seq_max / 2).max(1);
        for start in (0..plan.items.len()).step_by(chunk) {
            let sub = Plan::subset(plan, start..(start + chunk).min(plan.items.len()));
            let sched = self.schedule(&sub, prompt.rows(), true).clone();
            self.ensure_context(&sched)?;
            let (_, first, kept) = self.run_schedule(&sched, &[prompt], true, None)?;
            texts.extend(self.greedy(&first, &kept, max_tokens)?);
            self.stats.pairs += sub.items.len() as u64;
            self.schedules.remove(&(sub.id, prompt.rows(), true, 1));
        }
        Ok(texts)
    }

    /// Continue every kept sequence greedily; slot k's text goes to output k. Releases the
    /// sequences at the end.
    fn greedy(&mut self, first: &[Token], kept: &[(SeqId, Pos)], max_tokens: usize) -> Result<Vec<String>> {
        let model = self.model;
        let ctx = self.ctx.as_mut().expect("context");
        // One generation per distinct sequence (identical items share one).
        let mut seqs: Vec<SeqId> = kept.iter().map(|k| k.0).collect();
        seqs.sort_unstable();
        seqs.dedup();
        struct Gen {
            seq: SeqId,
            pos: Pos,
            next: Token,
            text: String,
            digits: bool,
            done: bool,
        }
        let mut gens: Vec<Gen> = seqs
            .iter()
            .map(|&seq| {
                let k = kept.iter().position(|x| x.0 == seq).expect("kept");
                Gen { seq, pos: kept[k].1, next: first[k], text: String::new(), digits: false, done: false }
            })
            .collect();
        let eos = model.eos();
        let mut batch = TokenBatch::new(gens.len().max(1), 1)?;
        for step in 0..max_tokens {
            batch.clear();
            let mut idx = Vec::new();
            for (g_i, g) in gens.iter_mut().enumerate().filter(|(_, g)| !g.done) {
                let piece = model.token_to_piece(g.next, false).unwrap_or_default();
                let has_digit = piece.chars().any(|c| c.is_ascii_digit());
                let ends_number = g.digits && !piece.chars().all(|c| c.is_ascii_digit());
                if Some(g.next) == eos || piece.contains('\n') || ends_number {
                    g.done = true;
                    continue;
                }
                g.text.push_str(&piece);
                g.digits |= has_digit;
                if step + 1 == max_tokens {
                    g.done = true;
                    continue;
                }
                idx.push((g_i, batch.push(g.next, g.pos, &[g.seq], true)?));
                g.pos += 1;
            }
            if idx.is_empty() {
                break;
            }
            ctx.decode_tokens(&batch)?;
            self.stats.decode_calls += 1;
            self.stats.computed += idx.len() as u64;
            for (g_i, b_i) in idx {
                gens[g_i].next = argmax(ctx.logits(b_i)?);
            }
        }
        for g in &gens {
            ctx.seq_rm(g.seq, -1, -1)?;
        }
        Ok(kept
            .iter()
            .map(|k| gens.iter().find(|g| g.seq == k.0).map(|g| g.text.clone()).unwrap_or_default())
            .collect())
    }
}

/// Label prefixes whose next-token distribution is needed: every proper prefix of a label, and
/// every label that another label extends (so "1" and "10" are told apart). Both backends use
/// this rule.
pub fn label_prefixes(labels: &[Vec<Token>]) -> Vec<Vec<Token>> {
    let mut out: Vec<Vec<Token>> = Vec::new();
    for l in labels {
        for j in 0..=l.len() {
            let p = l[..j].to_vec();
            let extended = labels.iter().any(|m| m.len() > j && m[..j] == p[..]);
            if extended && !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// The tokens that continue `prefix` into some label, sorted.
pub fn next_label_tokens(labels: &[Vec<Token>], prefix: &[Token]) -> Vec<Token> {
    let next: BTreeSet<Token> = labels
        .iter()
        .filter(|m| m.len() > prefix.len() && m[..prefix.len()] == prefix[..])
        .map(|m| m[prefix.len()])
        .collect();
    next.into_iter().collect()
}

/// Turn per-slot log-probabilities into option distributions. A label's probability is the
/// product of its tokens' probabilities times the probability that it ends there (that no
/// longer label continues it), so "1" and "10" are told apart.
fn item_scores(plan: &Plan, s: &Schedule, logp: &[HashMap<Token, f64>]) -> Vec<ItemScore> {
    let mut by_item: Vec<HashMap<Vec<Token>, usize>> = vec![HashMap::new(); plan.items.len()];
    for (k, slot) in s.slots.iter().enumerate() {
        by_item[slot.item].insert(slot.prefix.clone(), k);
    }
    plan.items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let raw: Vec<f64> = item
                .labels
                .iter()
                .map(|l| {
                    let mut lp = 0.0;
                    for j in 0..l.len() {
                        let slot = by_item[i][&l[..j]];
                        lp += logp[slot][&l[j]];
                    }
                    let mut p = lp.exp();
                    if let Some(&slot) = by_item[i].get(&l[..]) {
                        let cont: f64 = s.slots[slot].next.iter().map(|t| logp[slot][t].exp()).sum();
                        p *= (1.0 - cont).max(0.0);
                    }
                    p
                })
                .collect();
            let mass: f64 = raw.iter().sum();
            let probs = if mass > 0.0 {
                raw.iter().map(|p| p / mass).collect()
            } else {
                vec![1.0 / raw.len() as f64; raw.len()]
            };
            ItemScore { probs, label_mass: mass }
        })
        .collect()
}

/// Index of the largest logit (the first one on ties): greedy decoding here and in
/// [`generation`].
pub(crate) fn argmax(logits: &[f32]) -> Token {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as Token
}

fn log_sum_exp(x: &[f32]) -> f64 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = x.iter().map(|&v| f64::from(v - max).exp()).sum();
    f64::from(max) + sum.ln()
}
