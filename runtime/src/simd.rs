//! One vector type per instruction set behind one trait, so a kernel is
//! written once and compiled for each width inside a function that enables
//! that set (`#[target_feature]`), which alone calls it.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m256, __m512, _mm256_add_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps,
    _mm256_storeu_ps, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
    _mm512_storeu_ps,
};

/// `len` values of `buffer` (grown as needed) from a 64-byte boundary, a
/// cache line: a 16-lane vector at a multiple of 16 values from the start
/// never straddles two lines (an unaligned one costs two accesses).
pub(crate) fn aligned(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len + LINE {
        buffer.resize(len + LINE, 0.0);
    }
    let skip = to_line(buffer);
    &mut buffer[skip..skip + len]
}

/// Values in a cache line (64 bytes).
pub(crate) const LINE: usize = 64 / std::mem::size_of::<f32>();

/// How many of `values` come before the first that starts a cache line
/// (at most LINE: past a slice's end when it is shorter).
pub(crate) fn to_line(values: &[f32]) -> usize {
    values.as_ptr().align_offset(64).min(LINE)
}

/// Defines `[vis] fn $name(isa: Isa, args…)`, which runs `$body` compiled for
/// `isa`: the loops in it (and in the `#[inline(always)]` functions it
/// calls) that the compiler turns into vector code, element-wise adds say,
/// then use that set's vectors rather than the baseline's four lanes. A
/// closure could not carry the body: it is compiled on its own, for the
/// baseline.
macro_rules! compiled_for_isa {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$doc])*
        $vis fn $name(isa: $crate::gemm::Isa, $($arg: $ty),*) {
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512($($arg: $ty),*) $body
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) $body
            // SAFETY: `isa` is one this CPU runs (`Isa::detect`).
            unsafe {
                match isa {
                    $crate::gemm::Isa::Avx512 => avx512($($arg),*),
                    $crate::gemm::Isa::Avx2 => avx2($($arg),*),
                }
            }
        }
    };
}
pub(crate) use compiled_for_isa;

/// The vector operations the kernels need, for each width.
pub(crate) trait Vector: Copy {
    const LANES: usize;
    unsafe fn zero() -> Self;
    unsafe fn splat(x: f32) -> Self;
    unsafe fn load(from: *const f32) -> Self;
    unsafe fn store(to: *mut f32, v: Self);
    unsafe fn add(x: Self, y: Self) -> Self;
    /// x·y + z, rounded once.
    unsafe fn fmadd(x: Self, y: Self, z: Self) -> Self;
    /// Bit l set when value l from `from` is not zero (a NaN is not).
    unsafe fn nonzeros(from: *const f32) -> u32;
    /// Writes `first + l` for each lane l set in `lanes`, in order, from
    /// `out` on, and returns how many; `out` has room for `LANES` values
    /// (those past the count are overwritten freely).
    unsafe fn list_lanes(lanes: u32, first: u16, out: *mut u16) -> usize;
}

/// `Vector` for one register type from its intrinsics. Each method is
/// inlined into a function compiled for that instruction set
/// (`gemm::blocked_avx512`, say), which alone calls them.
macro_rules! vector {
    ($type:ty, $lanes:expr, $zero:ident, $splat:ident, $load:ident, $store:ident, $add:ident, $fmadd:ident, $nonzeros:ident, $list:ident) => {
        #[cfg(target_arch = "x86_64")]
        impl Vector for $type {
            const LANES: usize = $lanes;
            #[inline(always)]
            unsafe fn zero() -> Self {
                unsafe { $zero() }
            }
            #[inline(always)]
            unsafe fn splat(x: f32) -> Self {
                unsafe { $splat(x) }
            }
            #[inline(always)]
            unsafe fn load(from: *const f32) -> Self {
                unsafe { $load(from) }
            }
            #[inline(always)]
            unsafe fn store(to: *mut f32, v: Self) {
                unsafe { $store(to, v) }
            }
            #[inline(always)]
            unsafe fn add(x: Self, y: Self) -> Self {
                unsafe { $add(x, y) }
            }
            #[inline(always)]
            unsafe fn fmadd(x: Self, y: Self, z: Self) -> Self {
                unsafe { $fmadd(x, y, z) }
            }
            #[inline(always)]
            unsafe fn nonzeros(from: *const f32) -> u32 {
                unsafe { $nonzeros(from) }
            }
            #[inline(always)]
            unsafe fn list_lanes(lanes: u32, first: u16, out: *mut u16) -> usize {
                unsafe { $list(lanes, first, out) }
            }
        }
    };
}

vector!(
    __m512,
    16,
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_add_ps,
    _mm512_fmadd_ps,
    nonzeros_512,
    list_lanes_512
);
vector!(
    __m256,
    8,
    _mm256_setzero_ps,
    _mm256_set1_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_add_ps,
    _mm256_fmadd_ps,
    nonzeros_256,
    list_lanes_256
);

/// `Vector::nonzeros` for 16 lanes: one comparison (not-equal or unordered).
///
/// # Safety
/// `from` holds 16 values; the caller is compiled for AVX-512.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn nonzeros_512(from: *const f32) -> u32 {
    use std::arch::x86_64::{_CMP_NEQ_UQ, _mm512_cmp_ps_mask};
    // SAFETY: the caller's contract.
    unsafe { u32::from(_mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(_mm512_loadu_ps(from), _mm512_setzero_ps())) }
}

/// `Vector::nonzeros` for 8 lanes: a comparison and its sign bits.
///
/// # Safety
/// `from` holds 8 values; the caller is compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn nonzeros_256(from: *const f32) -> u32 {
    use std::arch::x86_64::{_CMP_NEQ_UQ, _mm256_cmp_ps, _mm256_movemask_ps};
    // SAFETY: the caller's contract.
    unsafe { _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(_mm256_loadu_ps(from), _mm256_setzero_ps())) as u32 }
}

/// `Vector::list_lanes` for 16 lanes: the lanes' numbers compressed to
/// the set ones in a register, narrowed to 16 bits and stored at once.
///
/// # Safety
/// `out` has room for 16 values; the caller is compiled for AVX-512.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn list_lanes_512(lanes: u32, first: u16, out: *mut u16) -> usize {
    use std::arch::x86_64::{
        __m256i, _mm256_storeu_si256, _mm512_add_epi32, _mm512_cvtepi32_epi16, _mm512_maskz_compress_epi32,
        _mm512_set1_epi32, _mm512_setr_epi32,
    };
    // SAFETY: the caller's contract.
    unsafe {
        let numbers = _mm512_add_epi32(
            _mm512_set1_epi32(i32::from(first)),
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        );
        let set = _mm512_maskz_compress_epi32(lanes as u16, numbers);
        _mm256_storeu_si256(out.cast::<__m256i>(), _mm512_cvtepi32_epi16(set));
    }
    (lanes & 0xffff).count_ones() as usize
}

/// `Vector::list_lanes` for 8 lanes: the set lanes' numbers for each of
/// the 256 masks from a table, the first added, stored at once.
///
/// # Safety
/// `out` has room for 8 values; the caller is compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn list_lanes_256(lanes: u32, first: u16, out: *mut u16) -> usize {
    use std::arch::x86_64::{__m128i, _mm_add_epi16, _mm_loadu_si128, _mm_set1_epi16, _mm_storeu_si128};
    let lanes = lanes as u8;
    // SAFETY: the caller's contract; each table row holds 8 values.
    unsafe {
        let numbers = _mm_loadu_si128(SET_LANES[usize::from(lanes)].as_ptr().cast::<__m128i>());
        _mm_storeu_si128(out.cast::<__m128i>(), _mm_add_epi16(numbers, _mm_set1_epi16(first as i16)));
    }
    lanes.count_ones() as usize
}

/// For each mask of 8 lanes, the numbers of its set lanes in order.
#[cfg(target_arch = "x86_64")]
static SET_LANES: [[u16; 8]; 256] = {
    let mut table = [[0; 8]; 256];
    let mut mask = 0;
    while mask < 256 {
        let (mut lane, mut len) = (0, 0);
        while lane < 8 {
            if mask >> lane & 1 == 1 {
                table[mask][len] = lane as u16;
                len += 1;
            }
            lane += 1;
        }
        mask += 1;
    }
    table
};
