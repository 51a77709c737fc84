//! The two faces of the program: a line editor for a person at a terminal,
//! and plain lines on standard input and output for scripts.
//!
//! Both give the session the same two things: a channel of typed lines and
//! an [`Output`]. The terminal is touched only by threads started here,
//! because the line editor blocks and must not sit on the async runtime.
//! Incoming messages go through the editor's external printer, which draws
//! them above the line being typed instead of through it.

use std::io::{self, BufRead, Write};
use std::sync::mpsc as std_mpsc;
use std::thread;

use rustyline::error::ReadlineError;
use rustyline::{DefaultEditor, ExternalPrinter};
use tokio::sync::mpsc;

use crate::command::is_private;

/// Where the session's text goes.
#[derive(Debug, Clone)]
pub struct Output {
    text: std_mpsc::Sender<String>,
    /// The line editor's next prompt; `None` without a terminal.
    prompts: Option<std_mpsc::Sender<String>>,
    /// Notes go to standard error, leaving standard output to the
    /// server's messages.
    notes_apart: bool,
}

impl Output {
    /// Shows a line (or a block of lines).
    pub fn line(&self, text: impl Into<String>) {
        // The printing thread ends only after the session, so an error here
        // means the program is already on its way out.
        let _ = self.text.send(text.into());
    }

    /// Shows a note of the program's own: connection state, help, why a
    /// command failed.
    pub fn note(&self, text: impl Into<String>) {
        if self.notes_apart {
            eprintln!("{}", text.into());
        } else {
            self.line(text);
        }
    }

    /// Sends notes to standard error from now on, so that a program
    /// reading standard output finds only what it asked for.
    pub fn notes_apart(self) -> Output {
        Output {
            notes_apart: true,
            ..self
        }
    }

    /// An output that shows nothing: for text that is to be worked out
    /// for what it teaches but not shown.
    pub fn discard() -> Output {
        let (text, _) = std_mpsc::channel();
        Output {
            text,
            prompts: None,
            notes_apart: false,
        }
    }

    /// Lets the person type the next line, after this prompt.
    pub fn prompt(&self, prompt: String) {
        if let Some(prompts) = &self.prompts {
            let _ = prompts.send(prompt);
        }
    }
}

/// The lines typed, the output, and the thread that prints; join it after
/// the session has dropped its `Output` so that nothing is left unprinted.
pub struct Face {
    pub lines: mpsc::UnboundedReceiver<String>,
    pub output: Output,
    pub printer: thread::JoinHandle<()>,
}

/// A line editor on the terminal, or an error if the terminal cannot do it
/// (a dumb terminal, say).
pub fn terminal() -> Result<Face, ReadlineError> {
    let mut editor = DefaultEditor::new()?;
    let mut printer = editor.create_external_printer()?;
    let (line_tx, lines) = mpsc::unbounded_channel();
    let (prompt_tx, prompts) = std_mpsc::channel();
    let (text_tx, texts) = std_mpsc::channel::<String>();

    thread::spawn(move || edit_lines(editor, prompts, line_tx));
    let printer = thread::spawn(move || {
        for text in texts {
            if printer.print(format!("{text}\n")).is_err() {
                println!("{text}");
            }
        }
    });
    Ok(Face {
        lines,
        output: Output {
            text: text_tx,
            prompts: Some(prompt_tx),
            notes_apart: false,
        },
        printer,
    })
}

/// Plain lines from standard input, text to standard output.
pub fn plain() -> Face {
    let (line_tx, lines) = mpsc::unbounded_channel();
    let (text_tx, texts) = std_mpsc::channel::<String>();

    thread::spawn(move || read_lines(line_tx));
    let printer = thread::spawn(move || {
        for text in texts {
            // A closed standard output leaves nobody to tell.
            let _ = writeln!(io::stdout().lock(), "{text}");
        }
    });
    Face {
        lines,
        output: Output {
            text: text_tx,
            prompts: None,
            notes_apart: false,
        },
        printer,
    }
}

/// Reads a line after each prompt the session gives, so that the prompt
/// always shows the conversation the previous line switched to.
fn edit_lines(
    mut editor: DefaultEditor,
    prompts: std_mpsc::Receiver<String>,
    lines: mpsc::UnboundedSender<String>,
) {
    while let Ok(prompt) = prompts.recv() {
        let line = loop {
            match editor.readline(&prompt) {
                Ok(line) => break Some(line),
                // Ctrl-C throws away the line being typed, as in a shell.
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => break None,
                Err(error) => {
                    eprintln!("cannot read the terminal: {error}");
                    break None;
                }
            }
        };
        let Some(line) = line else { return };
        if !is_private(&line) {
            let _ = editor.add_history_entry(line.as_str());
        }
        if lines.send(line).is_err() {
            return;
        }
    }
}

fn read_lines(lines: mpsc::UnboundedSender<String>) {
    let mut stdin = io::stdin().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match stdin.read_until(b'\n', &mut buf) {
            Ok(0) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']).to_owned();
                if lines.send(line).is_err() {
                    return;
                }
            }
            Err(error) => {
                eprintln!("cannot read standard input: {error}");
                return;
            }
        }
    }
}
