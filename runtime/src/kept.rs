//! Transforms of weights kept from one call to the next, for weights that
//! did not change in between.
//!
//! A forward pass names the version of the weights it reads
//! (`Hypers::weights`): a number no other contents of any weights have had
//! in this process (`fresh_version`), taken anew by the owner of the
//! weights every time it may write them. A transform made from the weights
//! at some address under some version is therefore a transform of exactly
//! the values that address holds under that version, and is reused; any
//! other version transforms them again. Training steps, which write the
//! weights they read, name no version and keep nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The version of weights that may change during the call, or whose
/// version is not known: nothing made from them is kept.
pub const UNVERSIONED: u64 = 0;
/// The version of weights that never change while the code that reads them
/// is loaded (a built library's, which are read-only data).
pub const READ_ONLY: u64 = 1;

static NEXT_VERSION: AtomicU64 = AtomicU64::new(READ_ONLY + 1);

/// A version no weights in this process have had before.
pub fn fresh_version() -> u64 {
    NEXT_VERSION.fetch_add(1, Ordering::Relaxed)
}

/// Drops what was kept for `version`: its weights have changed or are gone
/// (kept, it would only hold memory until evicted).
pub fn release(version: u64) {
    if version > READ_ONLY {
        kept().entries.retain(|e| e.version != version);
    }
}

/// What a kept transform was made from: the weights' first value and
/// length, and the transform (a kind and its sizes, which the caller
/// names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Source {
    pub weights: usize,
    pub len: usize,
    pub transform: [usize; 3],
}

impl Source {
    pub fn of(weights: &[f32], transform: [usize; 3]) -> Source {
        Source { weights: weights.as_ptr() as usize, len: weights.len(), transform }
    }
}

struct Entry {
    source: Source,
    version: u64,
    /// When it was last used (`Kept::clock`), for eviction.
    used: u64,
    values: Arc<Vec<f32>>,
}

struct Kept {
    entries: Vec<Entry>,
    clock: u64,
}

static KEPT: Mutex<Kept> = Mutex::new(Kept { entries: Vec::new(), clock: 0 });

/// The most the kept transforms hold: past it the least recently used are
/// dropped (VGG-16's Winograd filters take 172 MB).
const KEPT_BYTES: usize = 1 << 30;

fn kept() -> MutexGuard<'static, Kept> {
    // The entries are whole under any panic (pushes and removals only).
    KEPT.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The transform `make` computes from the weights of `source` under
/// `version`: the one kept from an earlier call if there is one, else
/// made now (outside the lock, so other callers are not held up) and kept
/// in place of any made from older versions of the same weights.
pub(crate) fn transform(source: Source, version: u64, make: impl FnOnce() -> Vec<f32>) -> Arc<Vec<f32>> {
    debug_assert_ne!(version, UNVERSIONED, "unversioned weights are transformed anew each call");
    {
        let mut kept = kept();
        kept.clock += 1;
        let now = kept.clock;
        if let Some(entry) = kept.entries.iter_mut().find(|e| e.source == source && e.version == version) {
            entry.used = now;
            return Arc::clone(&entry.values);
        }
    }
    let values = Arc::new(make());
    let mut kept = kept();
    kept.clock += 1;
    let used = kept.clock;
    kept.entries.retain(|e| e.source != source);
    kept.entries.push(Entry { source, version, used, values: Arc::clone(&values) });
    let bytes = |entries: &[Entry]| entries.iter().map(|e| e.values.len() * 4).sum::<usize>();
    while kept.entries.len() > 1 && bytes(&kept.entries) > KEPT_BYTES {
        let oldest = (0..kept.entries.len()).min_by_key(|&i| kept.entries[i].used).expect("entries");
        kept.entries.swap_remove(oldest);
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transform is made once per version of the weights: the same
    /// version reuses it, a new one makes it again from the new values.
    #[test]
    fn a_transform_is_kept_for_its_version_only() {
        let mut weights = vec![1.0f32, 2.0, 3.0];
        let made = std::cell::Cell::new(0);
        let double = |w: &[f32]| {
            made.set(made.get() + 1);
            w.iter().map(|v| 2.0 * v).collect::<Vec<f32>>()
        };
        let source = Source::of(&weights, [7, 3, 1]);
        let first = fresh_version();
        assert_eq!(*transform(source, first, || double(&weights)), [2.0, 4.0, 6.0]);
        assert_eq!(*transform(source, first, || double(&weights)), [2.0, 4.0, 6.0]);
        assert_eq!(made.get(), 1, "the same version transforms once");
        weights[0] = 10.0;
        let second = fresh_version();
        assert_ne!(first, second);
        assert_eq!(*transform(source, second, || double(&weights)), [20.0, 4.0, 6.0]);
        assert_eq!(made.get(), 2, "a new version transforms again");
        // Another transform of the same weights is kept beside it.
        let other = Source::of(&weights, [8, 3, 1]);
        assert_eq!(*transform(other, second, || vec![0.5]), [0.5]);
        assert_eq!(*transform(source, second, || double(&weights)), [20.0, 4.0, 6.0]);
        assert_eq!(made.get(), 2);
        // Released, the version's transforms are made again.
        release(second);
        assert_eq!(*transform(source, second, || double(&weights)), [20.0, 4.0, 6.0]);
        assert_eq!(made.get(), 3);
    }
}
