//! Subnormal floats in a thread's arithmetic. x86 cores take a microcode
//! assist, many times slower than a multiply, on every operation that
//! reads or produces one, and the backward pass of a network that has
//! learned its data produces them (the gradients of confident outputs,
//! tiny, multiplied again).
#![allow(unsafe_code)]

/// Makes the calling thread's float operations produce zero where their
/// result would be subnormal and read subnormal operands as zero (FTZ and
/// DAZ in the MXCSR register, as XLA's and TensorFlow's CPU threads run):
/// values below 1.2e-38 change, no others do. Elsewhere than on x86-64,
/// nothing changes.
pub fn flush_subnormals() {
    #[cfg(target_arch = "x86_64")]
    {
        /// Flush to zero (bit 15) and denormals are zero (bit 6).
        const FTZ_DAZ: u32 = 0x8040;
        let mut csr = 0u32;
        // SAFETY: stmxcsr and ldmxcsr read and write only this thread's
        // SSE control and status register, through a valid u32; both
        // bits exist on every x86-64 CPU.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &raw mut csr, options(nostack, preserves_flags));
            csr |= FTZ_DAZ;
            std::arch::asm!("ldmxcsr [{}]", in(reg) &raw const csr, options(nostack, preserves_flags));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::hint::black_box;

    /// Products of normal floats on a thread that does and one that does
    /// not flush: (one below the smallest normal float, a subnormal times
    /// two, half the smallest normal float, one that stays normal).
    fn products(flush: bool) -> (f32, f32, f32, f32) {
        std::thread::spawn(move || {
            if flush {
                super::flush_subnormals();
            }
            let subnormal = f32::from_bits(1);
            (
                black_box(1e-30f32) * black_box(1e-10f32),
                black_box(subnormal) * black_box(2.0f32),
                black_box(f32::MIN_POSITIVE) * black_box(0.5f32),
                black_box(3.0f32) * black_box(1e-30f32),
            )
        })
        .join()
        .expect("the thread runs")
    }

    #[test]
    fn a_flushing_thread_has_no_subnormals() {
        let (below, doubled, halved, normal) = products(false);
        assert!(below > 0.0 && !below.is_normal() && doubled == f32::from_bits(2) && halved > 0.0);
        let flushed = products(true);
        #[cfg(target_arch = "x86_64")]
        assert_eq!((flushed.0, flushed.1, flushed.2), (0.0, 0.0, 0.0));
        assert_eq!((flushed.3, normal), (3.0f32 * 1e-30, 3.0f32 * 1e-30));
    }
}
