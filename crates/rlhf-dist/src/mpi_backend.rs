//! [`Collective`] over MPI (rsmpi), for `mpirun` launches.

use crate::{Collective, DistError, Result};
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::datatype::PartitionMut;
use mpi::environment::{Threading, Universe};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Count;
use std::sync::Mutex;

/// Elements per `MPI_Allreduce` call: a gradient is summed in buckets of this size (32 MiB of
/// f32) so the scratch buffer stays small whatever the model's size.
const BUCKET: usize = 8 << 20;

pub struct Mpi {
    /// MPI is initialised `Serialized`: any thread may call, never two at once; the lock makes
    /// sure of that.
    comm: Mutex<SimpleCommunicator>,
    pub rank: usize,
    pub size: usize,
}

// SAFETY: the communicator is a handle MPI lets any thread use under `MPI_THREAD_SERIALIZED`,
// and every use goes through the mutex, so no two MPI calls run at once.
unsafe impl Send for Mpi {}
unsafe impl Sync for Mpi {}

pub fn start() -> Result<(Universe, Mpi)> {
    let (universe, level) = mpi::initialize_with_threading(Threading::Serialized)
        .ok_or_else(|| DistError::Launch("MPI was already initialised in this process".into()))?;
    if level < Threading::Serialized {
        return Err(DistError::Launch(format!("this MPI library offers threading {level:?}; rlhf needs Serialized")));
    }
    let comm = universe.world();
    let (rank, size) = (comm.rank() as usize, comm.size() as usize);
    Ok((universe, Mpi { comm: Mutex::new(comm), rank, size }))
}

impl Mpi {
    fn comm(&self) -> Result<std::sync::MutexGuard<'_, SimpleCommunicator>> {
        self.comm.lock().map_err(|_| DistError::Collective { rank: self.rank, what: "MPI lock poisoned".into() })
    }
}

fn sum_in_buckets<T: mpi::datatype::Equivalence + Copy + Default>(comm: &SimpleCommunicator, buf: &mut [T]) {
    let mut scratch = vec![T::default(); buf.len().min(BUCKET)];
    for chunk in buf.chunks_mut(BUCKET) {
        let out = &mut scratch[..chunk.len()];
        comm.all_reduce_into(&*chunk, out, SystemOperation::sum());
        chunk.copy_from_slice(out);
    }
}

impl Collective for Mpi {
    fn backend(&self) -> &'static str {
        "mpi"
    }
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        sum_in_buckets(&*self.comm()?, buf);
        Ok(())
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        sum_in_buckets(&*self.comm()?, buf);
        Ok(())
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let comm = self.comm()?;
        let too_big =
            || DistError::Collective { rank: self.rank, what: format!("{} bytes exceed MPI's count", mine.len()) };
        let mut counts = vec![0 as Count; self.size];
        comm.all_gather_into(&Count::try_from(mine.len()).map_err(|_| too_big())?, &mut counts[..]);
        let displs: Vec<Count> = counts.iter().scan(0, |at, &c| Some(std::mem::replace(at, *at + c))).collect();
        let total = counts.iter().map(|&c| c as usize).sum();
        let mut all = vec![0u8; total];
        {
            let mut parts = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            comm.all_gather_varcount_into(mine, &mut parts);
        }
        Ok(counts.iter().zip(&displs).map(|(&c, &d)| all[d as usize..(d + c) as usize].to_vec()).collect())
    }
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        let comm = self.comm()?;
        let root = comm.process_at_rank(root as i32);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        root.broadcast_into(&mut bytes[..]);
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        self.comm()?.barrier();
        Ok(())
    }
}
