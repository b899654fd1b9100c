//! Whether this process is one rank of an `mpirun` launch, and setting up its world.

use crate::{set_world, DistError, Result};

/// Keeps the MPI environment open while it lives: [`init`]'s caller holds it until the process
/// is done (MPI is finalised when it drops; a rank that exits without that is an error to
/// `mpirun`).
pub struct World {
    #[cfg(feature = "mpi")]
    _universe: Option<mpi::environment::Universe>,
    pub rank: usize,
    pub size: usize,
}

/// `(rank, size)` of the launch this process belongs to, from its launcher's environment
/// (Open MPI's `mpirun`, or a PMI launcher such as MPICH's Hydra or Slurm's `srun`); `None` when
/// it was started on its own.
pub fn launched_ranks() -> Option<(usize, usize)> {
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.trim().parse::<usize>().ok());
    [("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("PMI_RANK", "PMI_SIZE")]
        .iter()
        .find_map(|(r, s)| Some((var(r)?, var(s)?)))
}

/// Sets up the process's world: under `mpirun -np N` (N > 1), MPI and a world of N ranks;
/// otherwise one rank, with nothing to set up. An `mpirun` launch of a build without the `mpi`
/// feature is an error, not N independent runs writing one folder.
pub fn init() -> Result<World> {
    let (rank, size) = match launched_ranks() {
        Some((rank, size)) if size > 1 => (rank, size),
        _ => return Ok(solo()),
    };
    #[cfg(feature = "mpi")]
    {
        let (universe, comm) = crate::mpi_backend::start()?;
        if (comm.rank, comm.size) != (rank, size) {
            return Err(DistError::Launch(format!(
                "MPI says rank {} of {}, the launcher's environment rank {rank} of {size}",
                comm.rank, comm.size
            )));
        }
        set_world(backend(comm)?)?;
        Ok(World { _universe: Some(universe), rank, size })
    }
    #[cfg(not(feature = "mpi"))]
    {
        let _ = set_world;
        Err(DistError::Launch(format!(
            "this process is rank {rank} of {size} of an MPI launch, but this rlhf was built without MPI; \
             build it with `cargo build --release --features mpi` (scripts/setup-mpi.sh installs Open MPI)"
        )))
    }
}

/// `RLHF_COLLECTIVE`: what sums the gradients — `nccl` (the default of an `nccl` build) or
/// `mpi`.
#[cfg(feature = "mpi")]
fn backend(comm: crate::mpi_backend::Mpi) -> Result<Box<dyn crate::Collective>> {
    let wanted = std::env::var("RLHF_COLLECTIVE").unwrap_or_default();
    match wanted.as_str() {
        "mpi" => Ok(Box::new(comm)),
        #[cfg(feature = "nccl")]
        "" | "nccl" => Ok(Box::new(crate::nccl_backend::start(comm)?)),
        #[cfg(not(feature = "nccl"))]
        "" => Ok(Box::new(comm)),
        #[cfg(not(feature = "nccl"))]
        "nccl" => Err(DistError::Launch(
            "RLHF_COLLECTIVE=nccl needs a build with `--features rlhf-cli/nccl` (scripts/setup-cuda-build.sh)".into(),
        )),
        other => Err(DistError::Launch(format!("RLHF_COLLECTIVE={other:?}: expected \"mpi\" or \"nccl\""))),
    }
}

fn solo() -> World {
    World {
        #[cfg(feature = "mpi")]
        _universe: None,
        rank: 0,
        size: 1,
    }
}
