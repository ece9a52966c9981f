//! Data-parallel training over MPI: `mpirun -np N nnc train MODEL.nn`
//! with nnc built with `--features mpi`.
//!
//! Every process (rank) builds the same model, takes rank 0's weights and
//! its share of every batch's rows, and applies the same update, that of
//! the whole batch (`train::Team`, `ir::Shard`): the compiled step sums its
//! gradients and batch normalisation's statistics over the ranks through
//! `nnc_runtime::set_all_reduce`, which this module points at
//! `MPI_Allreduce`, on a thread of its own when the ranks span several
//! machines (`overlap_sums`). Rank 0 alone prints and writes files: the other ranks'
//! standard output goes to /dev/null, and so does their error stream once
//! training starts (before that it is kept aside, and shown if the rank
//! alone failed to start); their own failures are written to the error
//! stream they started with, naming the rank.
//!
//! Failures never leave a rank waiting: a failure while starting (say, bad
//! data on one rank) is agreed on before training and every rank exits; a
//! panic, or any other failure once training has begun, ends the whole job
//! with `MPI_Abort`. Without the `mpi` feature, or outside `mpirun`, there
//! is no cluster and training runs as one process.

#[cfg(feature = "mpi")]
pub use with_mpi::Cluster;
#[cfg(not(feature = "mpi"))]
pub use without_mpi::Cluster;

/// Whether an MPI launcher started this process as one of several.
fn launched_with_others() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .any(|size| size.trim().parse::<usize>().is_ok_and(|n| n > 1))
}

#[cfg(not(feature = "mpi"))]
mod without_mpi {
    use crate::train::Team;

    /// No cluster can exist without MPI.
    pub enum Cluster {}

    impl Cluster {
        /// None; under an MPI launcher, with a warning that each process
        /// trains alone.
        pub fn join() -> Result<Option<Cluster>, String> {
            if super::launched_with_others() {
                eprintln!(
                    "warning: started as one of several MPI processes, but this nnc was built without MPI: each \
                     process trains alone, on all the data; build with `cargo build --release --features mpi`"
                );
            }
            Ok(None)
        }

        pub fn rank(&self) -> usize {
            match *self {}
        }

        pub fn team(&self) -> Box<dyn Team> {
            match *self {}
        }

        pub fn settle(&self, _failed: bool) -> usize {
            match *self {}
        }

        pub fn report(&self, _message: &str) {
            match *self {}
        }

        pub fn abort(&self, _code: i32) -> ! {
            match *self {}
        }
    }
}

#[cfg(feature = "mpi")]
mod with_mpi {
    #![allow(unsafe_code)]

    use std::fs::File;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::sync::OnceLock;

    use mpi::collective::SystemOperation;
    use mpi::environment::Universe;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;

    use crate::train::Team;

    /// The error stream this process started with (its own is elsewhere on
    /// ranks other than 0): where its failures go.
    static STARTING_STDERR: OnceLock<File> = OnceLock::new();
    /// What a rank other than 0 wrote to its error stream while starting.
    static STARTUP_ERRORS: OnceLock<File> = OnceLock::new();

    /// This process's place in the MPI job; MPI ends when it is dropped.
    pub struct Cluster {
        _universe: Universe,
        world: SimpleCommunicator,
    }

    /// Arms the fail points `FAILPOINTS` names (`train-step=3*off->panic`:
    /// the fourth step on this rank panics), which is how a failure on one
    /// rank is tested; an error, not a panic, when the setting is malformed.
    fn configure_fail_points() -> Result<(), String> {
        let Ok(setting) = std::env::var("FAILPOINTS") else { return Ok(()) };
        for point in setting.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, actions) =
                point.split_once('=').ok_or_else(|| format!("FAILPOINTS: `{point}` is not NAME=ACTIONS"))?;
            fail::cfg(name.trim(), actions.trim()).map_err(|e| format!("FAILPOINTS: `{point}`: {e}"))?;
        }
        Ok(())
    }

    /// Whether the gradients' sums run on a thread of their own, sent while
    /// the backward pass goes on: when the ranks span several machines (the
    /// network moves the data while the cores compute), not when they share
    /// one (there the cores do the copying, and a second busy thread per
    /// rank would only take turns with the step). `NNC_OVERLAP=1` or `0`
    /// decides instead.
    fn overlap_sums(world: &SimpleCommunicator) -> Result<bool, String> {
        match std::env::var("NNC_OVERLAP").as_deref() {
            Ok("1") => Ok(true),
            Ok("0") => Ok(false),
            Ok(other) => Err(format!("NNC_OVERLAP: `{other}` is neither 1 (overlap) nor 0 (sum in the step)")),
            Err(_) => Ok(world.split_shared(0).size() < world.size()),
        }
    }

    impl Cluster {
        /// Joins the job this process was launched in; None outside one
        /// (or in a job of one process), so that training runs as always.
        pub fn join() -> Result<Option<Cluster>, String> {
            if !super::launched_with_others() {
                return Ok(None);
            }
            // The step, which calls MPI, runs on a thread of rayon's pool.
            let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Serialized)
                .ok_or("MPI could not be initialised (was it already?)")?;
            let world = universe.world();
            if world.size() < 2 {
                return Ok(None);
            }
            let stderr = dup(2).map_err(|e| format!("cannot keep the error stream: {e}"))?;
            let _ = STARTING_STDERR.set(stderr);
            if world.rank() != 0 {
                let kept =
                    startup_errors().map_err(|e| format!("cannot set rank {}'s output aside: {e}", world.rank()));
                let _ = STARTUP_ERRORS.set(kept?);
            }
            nnc_runtime::set_all_reduce(all_reduce, overlap_sums(&world)?);
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                // Rank 0's error stream is its own; the others' is set aside.
                match SimpleCommunicator::world().rank() {
                    0 => previous(info),
                    rank => report_as(rank, &format!("{info}")),
                }
                SimpleCommunicator::world().abort(101);
            }));
            configure_fail_points()?;
            Ok(Some(Cluster { _universe: universe, world }))
        }

        pub fn rank(&self) -> usize {
            self.world.rank() as usize
        }

        /// The trainer's view of the job.
        pub fn team(&self) -> Box<dyn Team> {
            Box::new(MpiTeam)
        }

        /// Ends the start: how many ranks (this one included when
        /// `failed`) failed to start. Every rank calls this at the same
        /// point. A rank other than 0 that failed while others did not shows
        /// what it wrote (a failure of all is rank 0's to show), before any
        /// rank goes on; from here on only its failures are shown.
        pub fn settle(&self, failed: bool) -> usize {
            let mut count = [f64::from(u8::from(failed))];
            MpiTeam.sum(&mut count);
            let count = count[0] as usize;
            if let (Some(mut kept), Some(mut stderr)) = (STARTUP_ERRORS.get(), STARTING_STDERR.get()) {
                if failed && count < self.world.size() as usize {
                    let mut text = String::new();
                    let _ = kept.seek(SeekFrom::Start(0)).and_then(|_| kept.read_to_string(&mut text));
                    // One write, so the launcher cannot interleave another rank's lines with it.
                    let _ = stderr.write_all(format!("rank {}: {text}", self.world.rank()).as_bytes());
                }
                let _ = redirect(2, "/dev/null");
            }
            // Nobody exits (and has the launcher end the job) before that is shown.
            self.world.barrier();
            count
        }

        /// Writes `message` where this rank's failures go, naming the rank.
        pub fn report(&self, message: &str) {
            report_as(self.world.rank(), message);
        }

        /// Ends every rank of the job.
        pub fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
    }

    fn report_as(rank: i32, message: &str) {
        if let Some(mut stderr) = STARTING_STDERR.get() {
            let _ = stderr.write_all(format!("rank {rank}: {message}\n").as_bytes());
        }
    }

    /// The sum the compiled step calls (`nnc_runtime::all_reduce`).
    fn all_reduce(x: &[f32], sum: &mut [f32]) {
        SimpleCommunicator::world().all_reduce_into(x, sum, SystemOperation::sum());
    }

    /// The job's processes (MPI's world communicator, looked up on each
    /// call: a handle that stays on its thread is not needed).
    struct MpiTeam;

    impl Team for MpiTeam {
        fn rank(&self) -> usize {
            SimpleCommunicator::world().rank() as usize
        }

        fn size(&self) -> usize {
            SimpleCommunicator::world().size() as usize
        }

        fn sum(&self, values: &mut [f64]) {
            let mine = values.to_vec();
            SimpleCommunicator::world().all_reduce_into(&mine[..], values, SystemOperation::sum());
        }

        fn broadcast(&self, values: &mut [f32]) {
            SimpleCommunicator::world().process_at_rank(0).broadcast_into(values);
        }
    }

    /// A second handle on file descriptor `fd`.
    fn dup(fd: i32) -> std::io::Result<File> {
        // SAFETY: dup only reads the descriptor table.
        let copy = unsafe { libc::dup(fd) };
        if copy < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `copy` is a fresh descriptor that nothing else owns.
        Ok(unsafe { File::from_raw_fd(copy) })
    }

    /// Standard output to /dev/null and the error stream to a file kept
    /// aside (an unnamed temporary file), which is returned.
    fn startup_errors() -> std::io::Result<File> {
        redirect(1, "/dev/null")?;
        let path = std::env::temp_dir().join(format!("nnc-rank-{}.err", std::process::id()));
        let kept = File::options().read(true).write(true).create_new(true).open(&path)?;
        std::fs::remove_file(&path)?;
        point(2, &kept)?;
        Ok(kept)
    }

    /// Points descriptor `fd` at the file `path`, opened for writing.
    fn redirect(fd: i32, path: &str) -> std::io::Result<()> {
        point(fd, &File::options().write(true).open(path)?)
    }

    /// Points descriptor `fd` at `file`.
    fn point(fd: i32, file: &File) -> std::io::Result<()> {
        // SAFETY: dup2 replaces descriptor `fd` (1 or 2) with a valid one.
        if unsafe { libc::dup2(file.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}
