//! `keyward completions SHELL` and `keyward man [--dir DIR]`: shell completion scripts and man
//! pages generated from the clap definitions ([`crate::cli::Cli`]), so they never drift from
//! the commands.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::{CliError, Result};

/// Writes the completion script of `shell` to standard output.
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "keyward", &mut out);
    write_stdout(&out)
}

/// The man page of `keyward` on standard output, or every page (`keyward.1` and one
/// `keyward-<command>.1` per subcommand, nested ones too) written into `dir` (created when
/// missing). Prints the files written.
pub fn man(dir: Option<&Path>) -> Result<()> {
    let cmd = Cli::command();
    match dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .map_err(|e| CliError::Io(e.to_string()))?;
            write_stdout(&out)
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| CliError::Io(format!("{}: {e}", dir.display())))?;
            clap_mangen::generate_to(cmd, dir).map_err(|e| CliError::Io(format!("{}: {e}", dir.display())))?;
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .map_err(|e| CliError::Io(format!("{}: {e}", dir.display())))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("keyward") && n.ends_with(".1"))
                .collect();
            names.sort();
            println!("{} man pages in {}", names.len(), dir.display());
            Ok(())
        }
    }
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::Io(format!("standard output: {e}")))
}
