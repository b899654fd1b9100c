//! The CLI's side of a data-parallel launch (`mpirun -np N rlhf …`): which commands run as
//! ranks, rank 0 alone on the terminal, and every rank's error reported with its rank.

use crate::Command;
use rlhf_dist::World;
use std::fs::File;
use std::io::Write;

/// Only the trainers split their work across ranks; any other command started by `mpirun`
/// would run N times over the same files.
pub fn check_command(command: &Command, world: &World) -> anyhow::Result<()> {
    if world.size == 1 {
        return Ok(());
    }
    match command {
        Command::Sft(_) | Command::Reward(_) | Command::Dpo(_) | Command::Grpo(_) | Command::Ppo(_) => {
            if world.rank == 0 {
                let backend = rlhf_dist::world().backend();
                eprintln!("data-parallel: {} ranks ({backend}); rank 0 writes the run folder", world.size);
            }
            Ok(())
        }
        _ => anyhow::bail!(
            "this command does not run data-parallel (sft, reward, dpo, grpo and ppo do); start it without mpirun"
        ),
    }
}

/// On ranks other than 0: stdout and stderr go to /dev/null (progress, tables and notes would
/// repeat N times), and the real stderr is kept for [`report`]. `None` on rank 0.
pub fn quiet_other_ranks(world: &World) -> Option<File> {
    if world.rank == 0 {
        return None;
    }
    let null = File::options().write(true).open("/dev/null").ok()?;
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: plain descriptor calls on descriptors this process owns; the duplicate of stderr
    // is owned by the returned File from here on.
    unsafe {
        let saved = libc::dup(2);
        if saved < 0 {
            return None;
        }
        libc::dup2(null.as_raw_fd(), 1);
        libc::dup2(null.as_raw_fd(), 2);
        Some(File::from_raw_fd(saved))
    }
}

/// Prints `message` on the terminal, naming the rank in a data-parallel run.
pub fn report(saved_stderr: Option<&File>, world: &World, message: &str) {
    match saved_stderr {
        Some(mut f) => {
            let _ = writeln!(f, "rank {}: {message}", world.rank);
        }
        None if world.size > 1 => eprintln!("rank {}: {message}", world.rank),
        None => eprintln!("{message}"),
    }
}
