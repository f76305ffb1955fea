//! The order in which pool tasks take a call's units: heaviest tiles
//! first, from the class table and the causal limit.

use super::*;

/// Work of unit tile `t` of a `[b, h]`: live `(group, key block)` pairs,
/// those neither past the causal limit nor −∞ throughout.
pub(super) fn tile_cost(p: &Problem, classes: Option<&[AtomicU8]>, t: usize) -> usize {
    let z = p.sizes;
    let nblocks = z.s_kv.div_ceil(NK);
    let g0 = t * (MQ / RQ);
    let g1 = (g0 + MQ / RQ).min(z.s_q.div_ceil(RQ));
    (g0..g1)
        .map(|g| {
            let last = (g * RQ + RQ).min(z.s_q) - 1;
            let seen = visible(p, last, 0, z.s_kv).div_ceil(NK);
            match classes {
                Some(c) => c.get(g * nblocks..(g + 1) * nblocks).map_or(seen, |row| {
                    row[..seen]
                        .iter()
                        .filter(|x| x.load(Ordering::Relaxed) != SKIP)
                        .count()
                }),
                None => seen,
            }
        })
        .sum()
}

/// The order in which pool tasks take units: `(batch, head)` by
/// `(batch, head)` (the threads work on the same K/V head's packed blocks
/// at the same time, while they are in cache), each one's tiles heaviest first (ties: later tiles first),
/// so that the last units handed out are the lightest and the threads end
/// together (under block-causal and causal masks the last query tiles see
/// the most keys).
pub(super) fn schedule(p: &Problem, classes: Option<&Classes>) -> Vec<usize> {
    let tiles = p.tiles();
    let heads = p.sizes.batch * p.sizes.q_heads;
    let mut costs: Vec<Option<Vec<usize>>> = vec![None; classes.map_or(1, Classes::planes)];
    let mut order = Vec::with_capacity(p.units());
    for bh in 0..heads {
        let (b, h) = (bh / p.sizes.q_heads.max(1), bh % p.sizes.q_heads.max(1));
        let plane = classes.map_or(0, |c| c.plane_of(b, h));
        let cost = costs[plane].get_or_insert_with(|| {
            let cells = classes.map(|c| c.plane(b, h));
            (0..tiles).map(|t| tile_cost(p, cells, t)).collect()
        });
        let mut ts: Vec<usize> = (0..tiles).rev().collect();
        ts.sort_by_key(|&t| std::cmp::Reverse(cost[t]));
        order.extend(ts.into_iter().map(|t| bh * tiles + t));
    }
    order
}
