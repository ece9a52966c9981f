//! Products the members of a `ThreadTeam` compute together. Replicas of a
//! training step run each product on their own rows, so each reads all of
//! a dense layer's weights, and each computes a weight gradient of its own
//! that a sum then reads again: past the caches (VGG-16's first dense
//! layer holds 411 MB), those passes over memory are the products' cost.
//! Together, each member reads or writes only its share:
//!
//! - `nnc_team_sgemm_columns`: c = a·b with b the same for every member
//!   (a weight): each member computes its share of the columns for every
//!   member's rows, reading that share of b once.
//! - `nnc_team_sgemm_sum`: the sum over the members of their products (a
//!   weight gradient): each member computes the range of it that it alone
//!   reads next (its part of the update), straight into its sum.
//!
//! Every element is computed as the member's own product and the team's
//! sum compute it, so the bits do not change. Outside a team, each is the
//! plain product.
#![allow(unsafe_code)]

use std::cell::RefCell;

use super::{Operand, SMALL_M, nnc_sgemm, part, small};
use crate::collective::{Members, as_member, part_range};
use crate::gemm::{adds_whole_chains, finish_rows};
use crate::kernels::Epilogue;
use crate::routines::{slice, slice_mut};

/// One member's side of a team product: `m × k` by `k × n`, into `c`.
struct Operands {
    m: usize,
    k: usize,
    n: usize,
    a: Operand,
    b: Operand,
    c: *mut f32,
}

// SAFETY: the members read each other's operands only inside
// `ThreadTeam::together`, while each keeps its own borrowed and unchanged
// (but for the disjoint parts of c the others write).
unsafe impl Sync for Operands {}

/// Values of c a member's sum computes at a time (512 KiB): the block
/// stays in the second-level cache while each member's product is added
/// to it, so that it goes out to memory once.
const SUM_BLOCK: usize = 1 << 17;

thread_local! {
    /// The gathered rows of a, and their product (or a block of a later
    /// member's term of a sum).
    static BUFFERS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// c = op(a)·op(b) (`nnc_sgemm`'s arguments), where every member's b is
/// the same values: this member computes its share of the columns for
/// every member's rows, and writes them into every member's c.
#[unsafe(no_mangle)]
pub extern "C" fn nnc_team_sgemm_columns(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    c: *mut f32,
    bias: *const f32,
    relu: usize,
) {
    let mine = Operands {
        m,
        k,
        n,
        a: Operand { ptr: a, rows: rsa, cols: csa },
        b: Operand { ptr: b, rows: rsb, cols: csb },
        c,
    };
    // SAFETY: a bias that is not null holds a value per column of c.
    let epilogue = Epilogue { bias: (!bias.is_null()).then(|| unsafe { slice(bias, n) }), relu: relu != 0 };
    let together = as_member(|team, rank| team.together(rank, &mine, |all| columns(all, rank, epilogue)));
    if together.is_none() {
        nnc_sgemm(m, k, n, a, rsa, csa, b, rsb, csb, c, bias, relu);
    }
}

/// Member `rank`'s columns of every member's product (`nnc_team_sgemm_columns`).
fn columns(all: Members<'_, Operands>, rank: usize, epilogue: Epilogue) {
    let Operands { k, n, b, .. } = *all.get(rank);
    assert!(all.iter().all(|o| (o.k, o.n) == (k, n)), "members multiplied different shapes");
    let (start, end) = part_range(n, TILE, (rank, all.count()));
    if start == end {
        return;
    }
    let width = end - start;
    // Rows a member's own product would run as dot products run so here,
    // the others through sgemm: each element as its member computes it.
    let dots = |o: &Operands| o.m <= SMALL_M && o.a.cols == 1 && b.rows == 1;
    for by_dots in [true, false] {
        let group = || all.iter().filter(move |o| dots(o) == by_dots);
        let rows: usize = group().map(|o| o.m).sum();
        if rows == 0 {
            continue;
        }
        BUFFERS.with_borrow_mut(|(gathered, product)| {
            gathered.clear();
            for o in group() {
                for i in 0..o.m {
                    // SAFETY: each member's a reaches its m × k elements through its strides.
                    unsafe {
                        match o.a.cols {
                            1 => gathered.extend_from_slice(slice(o.a.at(i, 0).ptr, k)),
                            _ => gathered.extend((0..k).map(|p| o.a.get(i, p))),
                        }
                    }
                }
            }
            product.clear();
            product.resize(rows * width, 0.0);
            let epilogue = epilogue.columns(start, width);
            if by_dots {
                let row = |i: usize| &gathered[i * k..][..k];
                // SAFETY: b's columns hold k contiguous values (rsb == 1), csb apart.
                let column = |j: usize| unsafe { slice(b.ptr.offset((start + j) as isize * b.cols), k) };
                small(width, row, column, product);
                // SAFETY: product holds rows × width values.
                unsafe { finish_rows(epilogue, (product.as_mut_ptr(), width), (0, rows), width) };
            } else {
                let a = Operand { ptr: gathered.as_ptr(), rows: k as isize, cols: 1 };
                // SAFETY: the gathered rows hold rows × k values; b's columns
                // start..end reach k rows; product holds rows × width.
                unsafe { part((rows, k, width), a, b.at(0, start), (product.as_mut_ptr(), width), false, epilogue) };
            }
            let mut from = product.chunks_exact(width);
            for o in group() {
                for i in 0..o.m {
                    // SAFETY: row i of member o's c, columns start..end,
                    // which only this member writes until the team's barrier.
                    let row = unsafe { slice_mut(o.c.add(i * n + start), width) };
                    row.copy_from_slice(from.next().expect("a row per member row"));
                }
            }
        });
    }
}

/// An element-wise loop of generated code over values `[begin, end)`,
/// with the step's arguments (store, scratch, input, target,
/// hyperparameters): an update that reads a team product's sum.
pub type Update = extern "C" fn(*mut f32, *mut f32, *const f32, *const f32, *const f32, usize, usize);

/// `sum[begin..end]` = Σ over the members, in rank order, of their
/// products op(a)·op(b) (`m × n`, row-major; `nnc_sgemm`'s arguments
/// otherwise), where `begin..end` is the range this member alone reads
/// next: each member computes its range from every member's operands.
/// With an `update`, it runs on each block of the range as soon as the
/// block is summed, while the block is in cache (given the step's
/// arguments that follow it).
#[unsafe(no_mangle)]
pub extern "C" fn nnc_team_sgemm_sum(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    sum: *mut f32,
    begin: usize,
    end: usize,
    update: Option<Update>,
    store: *mut f32,
    scratch: *mut f32,
    input: *const f32,
    target: *const f32,
    hyper: *const f32,
) {
    let mine = Operands {
        m,
        k,
        n,
        a: Operand { ptr: a, rows: rsa, cols: csa },
        b: Operand { ptr: b, rows: rsb, cols: csb },
        c: sum,
    };
    let update =
        update.map(|update| move |from: usize, to: usize| update(store, scratch, input, target, hyper, from, to));
    let together = as_member(|team, rank| team.together(rank, &mine, |all| sum_range(all, sum, (begin, end), update)));
    if together.is_none() {
        nnc_sgemm(m, k, n, a, rsa, csa, b, rsb, csb, sum, std::ptr::null(), 0);
        if let Some(update) = update {
            update(begin, end);
        }
    }
}

/// Values `begin..end` of `sum` from every member's product
/// (`nnc_team_sgemm_sum`), `update` run on each block once it is summed.
fn sum_range(
    all: Members<'_, Operands>,
    sum: *mut f32,
    (begin, end): (usize, usize),
    update: Option<impl Fn(usize, usize)>,
) {
    let Operands { m, n, .. } = *all.get(0);
    assert!(all.iter().all(|o| (o.m, o.n) == (m, n)), "members summed different shapes");
    assert!(begin <= end && end <= m * n, "a range outside the sum");
    for (row, rows, col, cols) in runs((begin, end), n) {
        let block = (SUM_BLOCK / cols).max(1);
        for first in (row..row + rows).step_by(block) {
            let rows = block.min(row + rows - first);
            // SAFETY: rows first.. of sum, columns col..col + cols, lie inside its m × n.
            let c = unsafe { sum.add(first * n + col) };
            for (q, o) in all.iter().enumerate() {
                let dims = (rows, o.k, cols);
                // SAFETY: each member's a and b reach its m × k and k × n
                // elements; (first, col) lies inside op(a)·op(b).
                let (a, b) = unsafe { (o.a.at(first, 0), o.b.at(0, col)) };
                if q == 0 || adds_whole_chains(o.k) {
                    // SAFETY: c reaches `rows` rows of `cols` values, n apart.
                    unsafe { part(dims, a, b, (c, n), q > 0, Epilogue::default()) };
                    continue;
                }
                // A later member's product apart, then added: the team's
                // sum of the members' products, bit for bit.
                BUFFERS.with_borrow_mut(|(_, term)| {
                    term.clear();
                    term.resize(rows * cols, 0.0);
                    // SAFETY: term holds rows × cols values.
                    unsafe { part(dims, a, b, (term.as_mut_ptr(), cols), false, Epilogue::default()) };
                    for (i, term) in term.chunks_exact(cols).enumerate() {
                        // SAFETY: as above; this member alone writes this range.
                        let row = unsafe { slice_mut(c.add(i * n), cols) };
                        row.iter_mut().zip(term).for_each(|(s, t)| *s += t);
                    }
                });
            }
            if let Some(update) = &update {
                // A run is one partial row or whole rows: its block is contiguous.
                let from = first * n + col;
                update(from, from + rows * cols);
            }
        }
    }
}

/// A member's share of a product's columns starts on a multiple of this
/// many (sgemm's tiles).
const TILE: usize = 16;

/// Values `begin..end` of a row-major matrix of `n` columns as rectangles
/// (first row, rows, first column, columns): a partial first row, whole
/// rows, a partial last row.
fn runs((begin, end): (usize, usize), n: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let n = n.max(1);
    let head_end = end.min(begin.next_multiple_of(n));
    let head = (begin % n != 0 && begin < end).then(|| (begin / n, 1, begin % n, head_end - begin));
    let at = if head.is_some() { head_end } else { begin };
    let whole = (end - at) / n;
    let body = (whole > 0).then(|| (at / n, whole, 0, n));
    let tail_start = at + whole * n;
    let tail = (tail_start < end).then(|| (tail_start / n, 1, 0, end - tail_start));
    [head, body, tail].into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ThreadTeam;

    /// Values that round differently in any other order of additions.
    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * 7919 + seed * 104_729) % 1009) as f32 / 317.0 - 1.5).collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Runs `work(rank)` on each member of a team of `members` threads.
    fn on_team<R: Send>(members: usize, work: impl Fn(usize) -> R + Sync) -> Vec<R> {
        let team = ThreadTeam::new(members);
        std::thread::scope(|s| {
            let (team, work) = (&team, &work);
            let handles: Vec<_> = (0..members).map(|rank| s.spawn(move || team.member(rank, || work(rank)))).collect();
            handles.into_iter().map(|h| h.join().expect("member")).collect()
        })
    }

    /// `nnc_sgemm`'s signature, which `nnc_team_sgemm_columns` shares.
    type Sgemm = extern "C" fn(
        usize,
        usize,
        usize,
        *const f32,
        isize,
        isize,
        *const f32,
        isize,
        isize,
        *mut f32,
        *const f32,
        usize,
    );

    /// Each member's rows times one shared b, with and without a bias and
    /// ReLU, with a and b as they are and transposed, and members of so
    /// few rows that their own products are dot products beside members
    /// whose are sgemm's: every member's c has the bits of its own product.
    #[test]
    fn members_computing_columns_together_get_their_own_products_bits() {
        for (rows, k, n) in [(vec![4, 4], 37, 45), (vec![3, 5, 1], 300, 70), (vec![7, 2], 5, 16), (vec![1, 1], 3, 9)] {
            for (b_by_columns, a_by_columns, relu) in (0..8).map(|i| (i & 1 == 1, i & 2 == 2, i >> 2)) {
                let (b, bias) = (values(k * n, 1), values(n, 2));
                let (rsb, csb) = if b_by_columns { (1, k as isize) } else { (n as isize, 1) };
                let a: Vec<Vec<f32>> = rows.iter().enumerate().map(|(r, &m)| values(m * k, 3 + r)).collect();
                let product = |rank: usize, c: &mut [f32], f: Sgemm| {
                    let (m, a) = (rows[rank], &a[rank]);
                    let (rsa, csa) = if a_by_columns { (1, m as isize) } else { (k as isize, 1) };
                    f(m, k, n, a.as_ptr(), rsa, csa, b.as_ptr(), rsb, csb, c.as_mut_ptr(), bias.as_ptr(), relu);
                };
                let together = on_team(rows.len(), |rank| {
                    let mut c = vec![f32::NAN; rows[rank] * n];
                    product(rank, &mut c, nnc_team_sgemm_columns);
                    c
                });
                for (rank, c) in together.iter().enumerate() {
                    let mut alone = vec![0.0; rows[rank] * n];
                    product(rank, &mut alone, nnc_sgemm);
                    let case = (b_by_columns, a_by_columns, relu);
                    assert_eq!(bits(c), bits(&alone), "{rows:?} {k} {n} {case:?}");
                }
            }
        }
    }

    /// An update of the values `[from, to)` of the scratch argument: x ↦ 2x + 1.
    extern "C" fn twice_plus_one(
        _: *mut f32,
        scratch: *mut f32,
        _: *const f32,
        _: *const f32,
        _: *const f32,
        from: usize,
        to: usize,
    ) {
        // SAFETY: the test hands its sum as scratch, and ranges inside it.
        unsafe { slice_mut(scratch.add(from), to - from) }.iter_mut().for_each(|x| *x = 2.0 * *x + 1.0);
    }

    /// The members' weight gradients (aᵀ·b over each member's rows), each
    /// member computing a range that starts and ends inside rows: the
    /// range has the bits of the team's sum of the members' own products,
    /// also where k passes a block of sgemm's, and an update runs once on
    /// each value of it (in blocks, past `SUM_BLOCK` values), after it is summed.
    #[test]
    fn members_summing_products_together_get_the_teams_sum_bits() {
        let cases = [(vec![4, 4], 50, 33), (vec![2, 700, 9], 21, 300), (vec![1, 3], 7, 1), (vec![3, 2], 1000, 300)];
        for ((ks, m, n), updated) in cases.into_iter().flat_map(|case| [(case.clone(), false), (case, true)]) {
            let members = ks.len();
            let a: Vec<Vec<f32>> = ks.iter().enumerate().map(|(r, &k)| values(k * m, 5 + r)).collect();
            let b: Vec<Vec<f32>> = ks.iter().enumerate().map(|(r, &k)| values(k * n, 11 + r)).collect();
            // A range of each member's own, split mid-row.
            let range = |rank: usize| ((m * n) * rank / members, (m * n) * (rank + 1) / members);
            let together = on_team(members, |rank| {
                let (k, mut sum) = (ks[rank], vec![f32::NAN; m * n]);
                let ((begin, end), (a, b)) = (range(rank), (&a[rank], &b[rank]));
                let (a, b, c) = (a.as_ptr(), b.as_ptr(), sum.as_mut_ptr());
                let update = updated.then_some(twice_plus_one as Update);
                let none = std::ptr::null();
                nnc_team_sgemm_sum(
                    m, k, n, a, 1, m as isize, b, n as isize, 1, c, begin, end, update, c, c, none, none, none,
                );
                sum
            });
            let own: Vec<Vec<f32>> = (0..members)
                .map(|r| {
                    let mut c = vec![0.0; m * n];
                    let (a, b) = (a[r].as_ptr(), b[r].as_ptr());
                    nnc_sgemm(m, ks[r], n, a, 1, m as isize, b, n as isize, 1, c.as_mut_ptr(), std::ptr::null(), 0);
                    c
                })
                .collect();
            let sum = |i: usize| own[1..].iter().fold(own[0][i], |s, c| s + c[i]);
            let expected: Vec<f32> = (0..m * n).map(|i| if updated { 2.0 * sum(i) + 1.0 } else { sum(i) }).collect();
            for (rank, sum) in together.iter().enumerate() {
                let (begin, end) = range(rank);
                let case = format!("{ks:?} {m} {n} member {rank}, updated {updated}");
                assert_eq!(bits(&sum[begin..end]), bits(&expected[begin..end]), "{case}");
                // Nothing outside its range.
                assert!(sum[..begin].iter().chain(&sum[end..]).all(|v| v.is_nan()), "{case}");
            }
        }
    }

    #[test]
    fn runs_cover_a_range_exactly() {
        for n in 1..7 {
            for begin in 0..20 {
                for end in begin..20 {
                    let covered: Vec<usize> = runs((begin, end), n)
                        .flat_map(|(row, rows, col, cols)| {
                            (row..row + rows).flat_map(move |r| (col..col + cols).map(move |c| r * n + c))
                        })
                        .collect();
                    assert_eq!(covered, (begin..end).collect::<Vec<_>>(), "{n} {begin} {end}");
                }
            }
        }
    }

    /// Outside a team, each is the plain product.
    #[test]
    fn alone_a_team_product_is_the_product() {
        let (a, b) = (values(6, 1), values(6, 2));
        let (mut c, mut s, mut plain) = (vec![0.0; 4], vec![0.0; 4], vec![0.0; 4]);
        nnc_sgemm(2, 3, 2, a.as_ptr(), 3, 1, b.as_ptr(), 2, 1, plain.as_mut_ptr(), std::ptr::null(), 0);
        nnc_team_sgemm_columns(2, 3, 2, a.as_ptr(), 3, 1, b.as_ptr(), 2, 1, c.as_mut_ptr(), std::ptr::null(), 0);
        let none = std::ptr::null();
        let (a, b) = (a.as_ptr(), b.as_ptr());
        nnc_team_sgemm_sum(
            2,
            3,
            2,
            a,
            3,
            1,
            b,
            2,
            1,
            s.as_mut_ptr(),
            0,
            4,
            None,
            s.as_mut_ptr(),
            s.as_mut_ptr(),
            none,
            none,
            none,
        );
        assert_eq!((bits(&c), bits(&s)), (bits(&plain), bits(&plain)));
    }
}
