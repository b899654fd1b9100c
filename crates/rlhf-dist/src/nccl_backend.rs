//! [`Collective`] whose gradient all-reduce runs on NCCL between GPUs (the `nccl` feature of a
//! `cuda` build), bootstrapped over MPI: rank 0 makes NCCL's unique id and broadcasts it, each
//! rank drives the GPU of its local rank. Everything but the sums (records, broadcasts,
//! barriers) stays on MPI.
//!
//! Our gradients live on the host (the trainer's gradient sink), so a sum goes host → device,
//! `ncclAllReduce`, device → host, a bucket at a time.

use crate::mpi_backend::Mpi;
use crate::{Collective, DistError, Result};
use cudarc::driver::{CudaContext, CudaStream, DeviceRepr, ValidAsZeroBits};
use cudarc::nccl::{Comm, Id, NcclType, ReduceOp};
use std::sync::{Arc, Mutex};

/// Elements per NCCL call (32 MiB of f32), as the MPI backend's buckets.
const BUCKET: usize = 8 << 20;

pub struct Nccl {
    mpi: Mpi,
    /// NCCL calls are issued one at a time, like MPI's.
    comm: Mutex<Comm>,
    stream: Arc<CudaStream>,
}

// SAFETY: the communicator and stream are handles NCCL and the CUDA driver let any thread use;
// every NCCL call goes through the mutex, so none run at once.
unsafe impl Send for Nccl {}
unsafe impl Sync for Nccl {}

/// The GPU of this rank: its rank among the ranks of its machine.
fn local_rank() -> usize {
    ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse().ok())
        .unwrap_or(0)
}

pub fn start(mpi: Mpi) -> Result<Nccl> {
    let rank = mpi.rank;
    let fail = |what: String| DistError::Launch(format!("rank {rank}: {what}"));
    let gpu = local_rank();
    let ctx = CudaContext::new(gpu).map_err(|e| fail(format!("cannot open GPU {gpu}: {e}")))?;
    let stream = ctx.default_stream();
    let mut id: Vec<u8> = if rank == 0 {
        let id = Id::new().map_err(|e| fail(format!("ncclGetUniqueId: {e:?}")))?;
        id.internal().iter().map(|&c| c as u8).collect()
    } else {
        Vec::new()
    };
    mpi.broadcast_bytes(&mut id, 0)?;
    let mut internal = [0 as std::ffi::c_char; 128];
    if id.len() != internal.len() {
        return Err(fail(format!("NCCL id of {} bytes from rank 0", id.len())));
    }
    internal.iter_mut().zip(&id).for_each(|(c, &b)| *c = b as std::ffi::c_char);
    let comm = Comm::from_rank(stream.clone(), rank, mpi.size, Id::uninit(internal))
        .map_err(|e| fail(format!("ncclCommInitRank: {e:?}")))?;
    Ok(Nccl { mpi, comm: Mutex::new(comm), stream })
}

impl Nccl {
    fn sum<T: NcclType + DeviceRepr + ValidAsZeroBits + Copy>(&self, buf: &mut [T]) -> Result<()> {
        let rank = self.mpi.rank;
        let fail = |what: String| DistError::Collective { rank, what };
        let comm = self.comm.lock().map_err(|_| fail("NCCL lock poisoned".into()))?;
        for chunk in buf.chunks_mut(BUCKET) {
            let mut dev = self.stream.clone_htod(&*chunk).map_err(|e| fail(format!("copy to the GPU: {e}")))?;
            comm.all_reduce_in_place(&mut dev, &ReduceOp::Sum).map_err(|e| fail(format!("ncclAllReduce: {e:?}")))?;
            self.stream.memcpy_dtoh(&dev, chunk).map_err(|e| fail(format!("copy from the GPU: {e}")))?;
            self.stream.synchronize().map_err(|e| fail(format!("GPU stream: {e}")))?;
        }
        Ok(())
    }
}

impl Collective for Nccl {
    fn backend(&self) -> &'static str {
        "nccl"
    }
    fn rank(&self) -> usize {
        self.mpi.rank
    }
    fn size(&self) -> usize {
        self.mpi.size
    }
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.sum(buf)
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.sum(buf)
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.mpi.all_gather_bytes(mine)
    }
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        self.mpi.broadcast_bytes(bytes, root)
    }
    fn barrier(&self) -> Result<()> {
        self.mpi.barrier()
    }
}
