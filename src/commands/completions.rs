//! `operator completions SHELL` and `operator man`: generated from the same clap definitions as the parser.

use clap::CommandFactory;

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut crate::cli::Cli::command(), "operator", &mut out);
    out
}

/// The man page operator(1), in roff.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(crate::cli::Cli::command()).render(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_completions_know_the_subcommands_and_flags() {
        let text = String::from_utf8(completions(clap_complete::Shell::Bash)).unwrap();
        for word in ["replay", "flatten", "--hook-timeout", "--record", "--format"] {
            assert!(text.contains(word), "{word} missing");
        }
    }

    #[test]
    fn the_man_page_names_the_program_and_its_flags() {
        let text = String::from_utf8(man_page().unwrap()).unwrap();
        assert!(text.starts_with(".ie") || text.contains(".TH operator"), "{}", &text[..200.min(text.len())]);
        assert!(text.contains("hook\\-timeout"), "flags are listed");
    }
}
