//! `liaison import`: a CSV file of customers to `invite` commands, as data.
//!
//! Every row becomes a [`Command`] built with [`Command::invite`], which
//! checks its arguments exactly as a mailed `invite` line is checked; no row
//! is ever written out as command text, so nothing in a cell (`wrote:`,
//! `> `, `-- `, `thanks`, a `#`) can change how other rows are read.
//!
//! The file is read as RFC 4180 CSV with the `csv` crate: `"…"` quotes a
//! cell, `""` inside one is a `"`, a UTF-8 byte-order mark and CRLF line
//! ends are accepted, blank lines (and rows of empty cells) are skipped and
//! cells are trimmed. The columns are `email,name,locale`; a first row whose
//! first cell is `email` is a header and may name them in another order.
//!
//! Every row is accounted for: it is either a command or a [`RowProblem`]
//! with its line number. Quoting allows a line break inside a cell, but no
//! column may hold one, and an unclosed `"` would otherwise swallow every
//! row up to the next `"`: so a row whose cells span several lines is
//! reported, and the lines after its first are read again as rows of their
//! own. An odd number of `"` in a row is reported as an unbalanced quote.

use crate::command::{shorten, Command, CommandError};
use serde::{Deserialize, Serialize};

/// A column of the import file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Email,
    Name,
    Locale,
    /// The admin-center approval link (only when a header names it).
    Link,
}

/// Longest cell quoted back in a report, in characters.
const MAX_QUOTED_CELL: usize = 80;

/// The columns when the file has no header row.
const DEFAULT_COLUMNS: [Column; 3] = [Column::Email, Column::Name, Column::Locale];

/// Why the file as a whole cannot be imported (nothing is run).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The header row names a column twice or one that does not exist.
    #[error("line {line}: header {problem}; the columns are email, name, locale, link")]
    Header {
        /// Line of the header row.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
}

/// One row's cells, by column, as they travel to the daemon (an empty cell
/// is `None`). Not yet checked: [`InviteRow::command`] does that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRow {
    /// The `email` cell.
    pub email: String,
    /// The `name` cell.
    pub name: Option<String>,
    /// The `locale` cell.
    pub locale: Option<String>,
    /// The `link` cell: the invitation's approval link.
    #[serde(default)]
    pub link: Option<String>,
}

impl InviteRow {
    /// The `invite` command for this row, checked as a mailed one would be.
    pub fn command(&self, draft: bool) -> Result<Command, CommandError> {
        Command::invite(
            &self.email,
            self.name.as_deref(),
            self.locale.as_deref(),
            draft,
        )?
        .with_link(self.link.as_deref())
    }
}

/// Why one row could not be read as CSV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowProblem {
    /// More cells than columns (usually an unquoted comma in a name).
    #[error("{cells} cells, but there are only {columns} columns (email, name, locale); quote a cell that holds a comma: \"Contoso, Ltd\"")]
    TooManyCells {
        /// Cells in the row.
        cells: usize,
        /// Columns of the file.
        columns: usize,
    },
    /// The row's cells run over several lines.
    #[error("a quoted cell runs from line {first} to line {last} (an unclosed `\"`?); no column may hold a line break, so the lines after {first} are read as rows of their own")]
    LineBreak {
        /// First line of the row.
        first: usize,
        /// Last line of the row.
        last: usize,
    },
    /// An odd number of `"` in the row.
    #[error("unbalanced `\"` (a quoted cell is not closed, or a `\"` inside one is not doubled)")]
    UnbalancedQuote,
    /// A cell is not UTF-8.
    #[error("not UTF-8 text (save the file as UTF-8)")]
    NotUtf8,
}

/// One data row of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Line (from 1) where the row starts.
    pub line: usize,
    /// The `email` cell as written (shortened), for reports; may be empty.
    pub email: String,
    /// The cells, or why the row could not be read.
    pub cells: Result<InviteRow, RowProblem>,
}

/// Reads the whole file into rows, in order. Only a bad header row fails
/// the whole file; any other problem is one row's.
pub fn parse(bytes: &[u8]) -> Result<Vec<Row>, ImportError> {
    let newlines: Vec<usize> = memchr_all(bytes, b'\n');
    let line_of = |pos: usize| newlines.partition_point(|&nl| nl < pos) + 1;
    let mut rows = Vec::new();
    let mut columns: Option<Vec<Column>> = None;
    let mut offset = 0;
    'restart: while offset < bytes.len() {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(&bytes[offset..]);
        let mut record = csv::ByteRecord::new();
        loop {
            let start = offset + reader.position().byte() as usize;
            match reader.read_byte_record(&mut record) {
                Ok(true) => {}
                // Reading from memory cannot fail, and a field-count check is
                // off (`flexible`); there is nothing left to read either way.
                Ok(false) | Err(_) => break 'restart,
            }
            let end = offset + reader.position().byte() as usize;
            let raw = &bytes[start..end];
            // The record's position includes the blank lines before it.
            let first = start + raw.iter().take_while(|b| b.is_ascii_whitespace()).count();
            let line = line_of(first);
            if record.iter().all(|c| c.is_empty()) {
                continue;
            }
            let email = shorten(
                &String::from_utf8_lossy(record.get(0).unwrap_or(b"")),
                MAX_QUOTED_CELL,
            );
            if record
                .iter()
                .any(|c| c.contains(&b'\n') || c.contains(&b'\r'))
            {
                let last = line_of(end.saturating_sub(1).max(first));
                rows.push(Row {
                    line,
                    email,
                    cells: Err(RowProblem::LineBreak { first: line, last }),
                });
                // Read again from the line after this row's first.
                offset = newlines[line - 1] + 1;
                continue 'restart;
            }
            if columns.is_none() {
                // Only the first row can be the header.
                if record
                    .get(0)
                    .is_some_and(|c| c.eq_ignore_ascii_case(b"email"))
                {
                    columns = Some(header_columns(&record, line)?);
                    continue;
                }
                columns = Some(DEFAULT_COLUMNS.to_vec());
            }
            let cols = columns.as_deref().expect("set above");
            let cells = if raw.iter().filter(|&&b| b == b'"').count() % 2 == 1 {
                Err(RowProblem::UnbalancedQuote)
            } else if record.len() > cols.len() {
                Err(RowProblem::TooManyCells {
                    cells: record.len(),
                    columns: cols.len(),
                })
            } else {
                invite_row(&record, cols)
            };
            rows.push(Row { line, email, cells });
        }
    }
    Ok(rows)
}

/// The columns a header row names.
fn header_columns(record: &csv::ByteRecord, line: usize) -> Result<Vec<Column>, ImportError> {
    let mut columns = Vec::new();
    for cell in record {
        let name = String::from_utf8_lossy(cell).to_lowercase();
        let column = match name.as_str() {
            "email" => Column::Email,
            "name" => Column::Name,
            "locale" => Column::Locale,
            "link" => Column::Link,
            _ => {
                return Err(ImportError::Header {
                    line,
                    problem: format!("column `{}` is unknown", shorten(&name, MAX_QUOTED_CELL)),
                })
            }
        };
        if columns.contains(&column) {
            return Err(ImportError::Header {
                line,
                problem: format!("names column `{name}` twice"),
            });
        }
        columns.push(column);
    }
    Ok(columns)
}

/// One record's cells by column; an empty cell is left out.
fn invite_row(record: &csv::ByteRecord, columns: &[Column]) -> Result<InviteRow, RowProblem> {
    let mut row = InviteRow {
        email: String::new(),
        name: None,
        locale: None,
        link: None,
    };
    for (cell, column) in record.iter().zip(columns) {
        let text = std::str::from_utf8(cell)
            .map_err(|_| RowProblem::NotUtf8)?
            .to_string();
        match column {
            Column::Email => row.email = text,
            _ if text.is_empty() => {}
            Column::Name => row.name = Some(text),
            Column::Locale => row.locale = Some(text),
            Column::Link => row.link = Some(text),
        }
    }
    Ok(row)
}

/// Keys of the batches of one import. The same file imported again for the
/// same partner gets the same keys, so a batch that already ran is not run
/// again; they are keyed with the secret, so nobody who merely knows (or
/// guesses) the file can compute one and pre-empt the batch with a mail
/// carrying it as its Message-ID.
pub struct BatchKeys {
    prefix: String,
}

impl BatchKeys {
    /// Keys for importing `file` for `partner` (`draft` or not).
    pub fn new(secret: &[u8], partner: &str, draft: bool, file: &[u8]) -> Self {
        use hmac::{Hmac, Mac};
        let mut mac =
            <Hmac<sha2::Sha256>>::new_from_slice(secret).expect("HMAC takes a key of any length");
        mac.update(b"liaison import\0");
        mac.update(partner.as_bytes());
        mac.update(if draft { b"\0draft\0" } else { b"\0send\0" });
        mac.update(file);
        let digest = mac.finalize().into_bytes();
        BatchKeys {
            prefix: format!(
                "import:{partner}:{}",
                data_encoding::HEXLOWER.encode(&digest[..16])
            ),
        }
    }

    /// The key of batch `n` (from 0).
    pub fn key(&self, n: usize) -> String {
        format!("{}:{n}", self.prefix)
    }
}

/// Positions of every `byte` in `haystack`.
fn memchr_all(haystack: &[u8], byte: u8) -> Vec<usize> {
    haystack
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == byte)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row as (line, the command or the problem as text).
    fn read(csv: &str) -> Vec<(usize, Result<Command, String>)> {
        parse(csv.as_bytes())
            .unwrap()
            .into_iter()
            .map(|r| {
                let cmd = match r.cells {
                    Ok(cells) => cells.command(false).map_err(|e| e.to_string()),
                    Err(p) => Err(p.to_string()),
                };
                (r.line, cmd)
            })
            .collect()
    }

    fn invite(customer: &str, name: Option<&str>, locale: Option<&str>) -> Command {
        Command::Invite {
            customer: customer.into(),
            name: name.map(Into::into),
            locale: locale.map(Into::into),
            draft: false,
            link: None,
            gdap: None,
        }
    }

    #[test]
    fn rows_become_invite_commands() {
        let rows = read("email,name,locale\nAlice@Contoso.test,Contoso,KO\nbob@fabrikam.test\ncarol@contoso.test,,en\n");
        assert_eq!(
            rows,
            vec![
                (
                    2,
                    Ok(invite("alice@contoso.test", Some("Contoso"), Some("ko")))
                ),
                (3, Ok(invite("bob@fabrikam.test", None, None))),
                (4, Ok(invite("carol@contoso.test", None, Some("en")))),
            ]
        );
        let draft = parse(b"alice@contoso.test").unwrap()[0]
            .cells
            .clone()
            .unwrap()
            .command(true)
            .unwrap();
        assert!(matches!(draft, Command::Invite { draft: true, .. }));
    }

    #[test]
    fn text_that_ends_a_mail_script_is_only_a_cell() {
        let rows = read(
            "alice+1@contoso.test,,\nalice+2@contoso.test,,wrote:\nalice+3@contoso.test,wrote:\n\
             alice+4@contoso.test,-- \nalice+5@contoso.test,> quoted\nthanks\nalice+6@contoso.test,# not a comment\n",
        );
        assert_eq!(rows.len(), 7, "{rows:?}");
        assert_eq!(rows[0], (1, Ok(invite("alice+1@contoso.test", None, None))));
        let e = rows[1].1.clone().unwrap_err();
        assert!(e.contains("locale `wrote:`"), "{e}");
        assert_eq!(
            rows[2],
            (3, Ok(invite("alice+3@contoso.test", Some("wrote:"), None)))
        );
        assert_eq!(
            rows[4],
            (
                5,
                Ok(invite("alice+5@contoso.test", Some("> quoted"), None))
            )
        );
        assert!(rows[5].1.clone().unwrap_err().contains("`thanks`"));
        assert_eq!(
            rows[6].1,
            Ok(invite(
                "alice+6@contoso.test",
                Some("# not a comment"),
                None
            ))
        );
    }

    #[test]
    fn rfc_4180_quoting_bom_crlf_and_blank_lines() {
        let rows = read(
            "\u{feff}email,name,locale\r\n\r\n\"alice@contoso.test\",\"Contoso, Ltd\",en\r\n \r\n,,\r\n\
             bob@fabrikam.test,\"The \"\"Best\"\" Co\",ko\r\ncarol@contoso.test, Spaced ,\r\n",
        );
        assert_eq!(
            rows,
            vec![
                (
                    3,
                    Ok(invite(
                        "alice@contoso.test",
                        Some("Contoso, Ltd"),
                        Some("en")
                    ))
                ),
                (
                    6,
                    Ok(invite(
                        "bob@fabrikam.test",
                        Some("The \"Best\" Co"),
                        Some("ko")
                    ))
                ),
                (7, Ok(invite("carol@contoso.test", Some("Spaced"), None))),
            ]
        );
    }

    #[test]
    fn a_header_names_the_columns() {
        let rows = read("EMAIL,Locale,Name\nalice@contoso.test,ko,Contoso\n");
        assert_eq!(
            rows,
            vec![(
                2,
                Ok(invite("alice@contoso.test", Some("Contoso"), Some("ko")))
            )]
        );
        let e = parse(b"email,company\nalice@contoso.test,x\n").unwrap_err();
        assert!(e.to_string().contains("`company`"), "{e}");
        assert!(parse(b"email,name,name\n").is_err());
        // Only the first row can be the header.
        let rows = read("alice@contoso.test\nemail\n");
        assert!(rows[1].1.clone().unwrap_err().contains("`email`"));
    }

    #[test]
    fn a_quoted_line_break_is_reported_and_the_rows_it_spans_are_read_again() {
        // An unclosed quote on line 2 would swallow lines 3 and 4 (up to the
        // next quote); they are read again as rows of their own.
        let rows = read(
            "alice+1@contoso.test,One,en\nalice+2@contoso.test,\"Two,en\nalice+3@contoso.test,Three,en\n\
             alice+4@contoso.test,\"Four\",en\nalice+5@contoso.test,Five,en\n",
        );
        assert_eq!(rows.len(), 5, "{rows:?}");
        assert_eq!(rows[1].0, 2);
        let e = rows[1].1.clone().unwrap_err();
        assert!(e.contains("from line 2 to line 4"), "{e}");
        assert_eq!(
            rows[2],
            (
                3,
                Ok(invite("alice+3@contoso.test", Some("Three"), Some("en")))
            )
        );
        assert_eq!(
            rows[3],
            (
                4,
                Ok(invite("alice+4@contoso.test", Some("Four"), Some("en")))
            )
        );
        assert_eq!(
            rows[4],
            (
                5,
                Ok(invite("alice+5@contoso.test", Some("Five"), Some("en")))
            )
        );
        // A quote never closed runs to the end of the file.
        let rows = read("alice+1@contoso.test,\"One\nalice+2@contoso.test,Two\n");
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows[0].1.clone().unwrap_err().contains("line 1 to line 2"));
        assert_eq!(
            rows[1],
            (2, Ok(invite("alice+2@contoso.test", Some("Two"), None)))
        );
    }

    #[test]
    fn malformed_rows_are_reported_with_their_line() {
        let rows = read(
            "alice+1@contoso.test,Contoso, Ltd,en\nalice+2@contoso.test,\"Two\nalice+3@contoso.test,\"Three\"x\"\n\
             not-an-address,Four\n,Five\nalice+6@contoso.test,Six,fr\n",
        );
        let lines: Vec<usize> = rows.iter().map(|r| r.0).collect();
        assert_eq!(lines, [1, 2, 3, 4, 5, 6]);
        let errors: Vec<String> = rows.into_iter().map(|r| r.1.unwrap_err()).collect();
        assert!(errors[0].contains("4 cells"), "{}", errors[0]);
        assert!(errors[1].contains("line 2 to line 3"), "{}", errors[1]);
        assert!(errors[2].contains("unbalanced"), "{}", errors[2]);
        assert!(
            errors[3].contains("`not-an-address` is not an email address"),
            "{}",
            errors[3]
        );
        assert!(errors[4].contains("missing"), "{}", errors[4]);
        assert!(errors[5].contains("locale `fr`"), "{}", errors[5]);
        let bad = parse(b"alice@contoso.test,\xff\xfe\n").unwrap();
        assert_eq!(bad[0].cells, Err(RowProblem::NotUtf8));
    }

    #[test]
    fn batch_keys_are_stable_and_keyed() {
        let k = |secret: &[u8], partner, draft, file: &[u8]| {
            BatchKeys::new(secret, partner, draft, file).key(1)
        };
        let base = k(b"secret-one", "northwind", false, b"a@b.test\n");
        assert_eq!(base, k(b"secret-one", "northwind", false, b"a@b.test\n"));
        assert!(
            base.starts_with("import:northwind:") && base.ends_with(":1"),
            "{base}"
        );
        for other in [
            k(b"secret-two", "northwind", false, b"a@b.test\n"),
            k(b"secret-one", "contoso", false, b"a@b.test\n"),
            k(b"secret-one", "northwind", true, b"a@b.test\n"),
            k(b"secret-one", "northwind", false, b"c@d.test\n"),
        ] {
            assert_ne!(base.rsplit(':').nth(1), other.rsplit(':').nth(1));
        }
    }

    #[test]
    fn a_link_column_carries_the_approval_link() {
        let link = "https://admin.microsoft.com/AdminPortal/Home#/partners/invitation/granularAdminRelationships/abc";
        let rows = read(&format!(
            "email,link\nalice@contoso.test,{link}\nbob@fabrikam.test,\n"
        ));
        let cmds: Vec<Command> = rows.into_iter().map(|(_, c)| c.unwrap()).collect();
        assert!(matches!(&cmds[0], Command::Invite { link: Some(l), .. } if l == link));
        assert!(matches!(&cmds[1], Command::Invite { link: None, .. }));
        // A link is data: a space in it is refused as in a mailed `invite … link`.
        let bad =
            read("email,link\nalice@contoso.test,\"https://admin.microsoft.com/a\u{202e}b\"\n");
        assert!(
            bad[0].1.as_ref().unwrap_err().contains("U+202E"),
            "{:?}",
            bad[0]
        );
    }

    #[test]
    fn the_checks_are_those_of_a_mailed_invite() {
        for (cells, line) in [
            (
                ("alice@contoso.test", Some("Con\u{7}toso"), None),
                "invite alice@contoso.test name \"Con\u{7}toso\"",
            ),
            (
                ("alice@contoso.test", None, Some("fr")),
                "invite alice@contoso.test locale fr",
            ),
            (("nobody", None, None), "invite nobody"),
        ] {
            let row = InviteRow {
                email: cells.0.into(),
                name: cells.1.map(Into::into),
                locale: cells.2.map(Into::into),
                link: None,
            };
            assert_eq!(
                row.command(false),
                crate::command::parse_line(line),
                "{line}"
            );
        }
    }
}
