//! Finding Liaison's own mail quoted in a reply by its content
//! (`reply::split_reply_known`, issue 15 part 1).
//!
//! Every customer template (the ones with an HTML part), in English and
//! Korean, is rendered from the shipped templates, composed into the mail
//! Liaison really sends, and read back the way the store keeps it
//! (`SentMail::from_raw`). Each is then quoted the way real clients quote —
//! Gmail, Outlook desktop and web, Apple Mail in Korean, Naver, Supercite,
//! an HTML-only reply with a `<blockquote>`, a partial `>` quote with the
//! answer below, a header-first bottom post, and attributions in languages
//! and shapes no heuristic knows — with the plain-text part or the HTML
//! part as the client saw it, re-wrapped, white space collapsed,
//! punctuation changed and banners added. The answer must come out alone,
//! and the intent must be decided by it alone.
//!
//! The fixtures are written here from how those clients format a reply;
//! none is taken from another project.

use std::path::Path;

use liaison_core::mail::intent::{detect, Intent};
use liaison_core::mail::reply::{
    new_text, new_text_known, split_reply_known, KnownOriginal, SentMail,
};
use liaison_core::render::templates::TemplateName;

/// The mails Liaison sends to customers, composed for real, per locale.
fn customer_mails(locale: &str) -> Vec<(TemplateName, SentMail, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let templates =
        liaison::files::load_templates(&root.join("templates")).expect("templates load");
    let config_text =
        std::fs::read_to_string(root.join("config/liaison.dev.toml")).expect("dev config");
    let config = liaison_core::config::Config::parse(
        &config_text,
        Path::new("liaison.dev.toml"),
        &liaison::files::EnvAndFiles,
    )
    .expect("dev config parses");
    let tokens = liaison_core::model::token::TokenKey::new(b"reply-known-test-secret");
    TemplateName::ALL
        .into_iter()
        .filter(|t| t.needs_html())
        .map(|t| {
            let plan = liaison_core::render::plan::MailPlan {
                template: t,
                locale: locale.to_string(),
                to: vec!["alice@contoso.test".into()],
                from: liaison_core::render::plan::Sender::Invitations,
                reply_to: Some("invites+sampletoken@liaison.test".into()),
                message_id: format!("{}.{locale}@liaison.test", t.as_str()),
                in_reply_to: None,
                references: vec![],
                vars: t.sample_vars(),
                invitation: Some(1),
                ticket: None,
                attachments: vec![],
            };
            let mail = liaison_core::render::compose::compose(
                &config,
                &templates,
                tokens.ids(),
                &plan,
                1_767_693_600,
            )
            .expect("composes");
            let sent = SentMail::from_raw(mail.raw.as_bytes()).expect("parses back");
            assert!(sent.html_text.is_some(), "{t:?} has an HTML part");
            (t, sent, mail.subject)
        })
        .collect()
}

/// Re-wraps paragraphs at `width` characters, as clients do when they
/// quote (format=flowed, Outlook's 76 columns, a phone's narrow view).
fn rewrap(text: &str, width: usize) -> String {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let words: Vec<&str> = para.split_whitespace().collect();
        let mut line = String::new();
        for w in words {
            if !line.is_empty() && line.chars().count() + 1 + w.chars().count() > width {
                out.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(w);
        }
        if !line.is_empty() {
            out.push(line);
        }
        out.push(String::new());
    }
    out.join("\n").trim_end().to_string()
}

fn prefix_lines(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| format!("{prefix}{l}").trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Typographic punctuation and collapsed white space, as word processors
/// and some webmail composers turn the quoted text into.
fn retype(text: &str) -> String {
    let mut s = String::new();
    let mut open = true;
    for ch in text.chars() {
        match ch {
            '"' => {
                s.push(if open { '“' } else { '”' });
                open = !open;
            }
            '\'' => s.push('’'),
            ':' => s.push_str(" :"),
            _ => s.push(ch),
        }
    }
    s.split('\n')
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One way of quoting: the reply body given the answer and the sent mail.
struct Style {
    name: &'static str,
    /// Whether the heuristics alone (no known original) already get this
    /// one right; the ones they miss show what the matching adds.
    heuristics_miss: bool,
    build: fn(answer: &str, sent: &SentMail, subject: &str) -> String,
}

fn html(sent: &SentMail) -> &str {
    sent.html_text.as_deref().expect("html part")
}

const STYLES: &[Style] = &[
    Style {
        name: "Gmail top-post, > quoted text part",
        heuristics_miss: false,
        build: |a, s, _| {
            format!(
                "{a}\n\nOn Tue, Jan 6, 2026 at 10:00 AM Liaison <invites@liaison.test> wrote:\n\n{}\n",
                prefix_lines(&s.text, "> ")
            )
        },
    },
    Style {
        name: "Outlook desktop: rule, header block, unmarked HTML part",
        heuristics_miss: false,
        build: |a, s, subj| {
            format!(
                "{a}\n\n________________________________\nFrom: Liaison <invites@liaison.test>\nSent: Tuesday, January 6, 2026 10:00 AM\nTo: alice@contoso.test\nSubject: {subj}\n\n{}\n",
                html(s)
            )
        },
    },
    Style {
        name: "Apple Mail Korean, date first, verb last (… 작성:)",
        heuristics_miss: true,
        build: |a, s, _| {
            format!(
                "{a}\n\n2026. 1. 6. 오전 10:00, Liaison <invites@liaison.test> 작성:\n\n{}\n",
                prefix_lines(&s.text, "> ")
            )
        },
    },
    Style {
        name: "Swahili attribution without colon or address, unmarked re-wrapped HTML part",
        heuristics_miss: true,
        build: |a, s, _| {
            format!(
                "{a}\n\nMnamo Jumanne tarehe 6 Januari 2026 saa 10 asubuhi Liaison aliandika hivi\n\n{}\n",
                rewrap(html(s), 60)
            )
        },
    },
    Style {
        name: "Icelandic wrapped attribution with a mailto line, retyped text part",
        heuristics_miss: true,
        build: |a, s, _| {
            format!(
                "{a}\n\nÞann þri., 6. jan. 2026 kl. 10:00 skrifaði Liaison <\nmailto:invites@liaison.test\n\n>\n\n{}\n",
                retype(&rewrap(&s.text, 72))
            )
        },
    },
    Style {
        name: "Supercite initials prefix under an Emacs attribution",
        heuristics_miss: true,
        build: |a, s, _| {
            format!(
                "{a}\n\n>>>>> \"L\" == Liaison  <invites@liaison.test> writes:\n\n{}\n",
                prefix_lines(&s.text, "L> ")
            )
        },
    },
    Style {
        name: "HTML-only reply: the answer in a div, the HTML part in a blockquote",
        heuristics_miss: true,
        build: |a, s, _| {
            let html_reply = format!(
                "<html><body><div dir=\"ltr\">{a}</div><br><div class=\"gmail_quote\"><div dir=\"ltr\">Tarehe 6 Jan 2026, Liaison aliandika</div><blockquote style=\"margin:0 0 0 .8ex\">{}</blockquote></div></body></html>",
                s.html_text.as_deref().unwrap_or_default().replace('\n', "<br>")
            );
            liaison_core::mail::inbound::html_to_text(&html_reply)
        },
    },
    Style {
        name: "header-first bottom post: forwarded-style block, unmarked copy, answer below",
        heuristics_miss: true,
        build: |a, s, subj| {
            format!(
                "Liaison <invites@liaison.test> kirjoitti 6.1.2026 klo 10.00 aiheesta {subj}\n\n{}\n\n{a}\n",
                s.text
            )
        },
    },
    Style {
        name: "client banner inside the unmarked copy, narrow re-wrap",
        heuristics_miss: true,
        build: |a, s, _| {
            let copy = rewrap(&s.text, 38);
            let (head, tail) = copy.split_at(copy.find("\n\n").unwrap_or(0));
            format!(
                "{a}\n\nLiaison (invites@liaison.test) 6/1/2026 10:00\n{head}\n\n[Caution: this sender is outside your organisation]\n{tail}\n"
            )
        },
    },
    Style {
        name: "Naver Mail Korean header block with the text part",
        heuristics_miss: false,
        build: |a, s, subj| {
            format!(
                "{a}\n\n-----Original Message-----\nFrom: \"Liaison\"<invites@liaison.test>\nTo: <alice@contoso.test>;\nCc:\nSent: 2026-01-06 (화) 10:00:00 (GMT+09:00)\nSubject: {subj}\n\n{}\n",
                s.text
            )
        },
    },
];

/// The answers written above (or below) each quote, with what they mean
/// when they answer an invitation or a restore request.
const ANSWERS: &[(&str, Intent)] = &[
    ("Accept", Intent::Accept),
    ("거절합니다.", Intent::Decline),
    (
        "Who is Northwind Traders? Please call me first.",
        Intent::Other,
    ),
];

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn every_customer_mail_quoted_by_every_client_style_leaves_only_the_answer() {
    let mut checked = 0;
    let mut heuristic_failures = 0;
    for locale in ["en", "ko"] {
        for (template, sent, subject) in customer_mails(locale) {
            let known = KnownOriginal::new(std::slice::from_ref(&sent));
            for style in STYLES {
                for (answer, meaning) in ANSWERS {
                    let body = (style.build)(answer, &sent, &subject);
                    let got = new_text_known(&body, &known);
                    assert_eq!(
                        squash(&got),
                        squash(answer),
                        "{locale}/{} quoted as {}:\n---\n{body}\n---",
                        template.as_str(),
                        style.name
                    );
                    let split = split_reply_known(&body, &known);
                    assert_eq!(split.new_text, got);
                    if matches!(template, TemplateName::Invitation | TemplateName::Restore) {
                        assert_eq!(
                            detect(&got),
                            *meaning,
                            "{locale}/{} quoted as {}",
                            template.as_str(),
                            style.name
                        );
                    }
                    if squash(&new_text(&body)) != squash(answer) {
                        heuristic_failures += 1;
                        assert!(
                            style.heuristics_miss,
                            "the heuristics alone miss {} for {locale}/{}",
                            style.name,
                            template.as_str()
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    println!("{checked} replies checked; the heuristics alone got {heuristic_failures} wrong");
    assert!(
        heuristic_failures > 0,
        "the styles must include shapes only the known original resolves"
    );
}

/// An invitation quoted in a format and language no heuristic knows: the
/// heuristics leak the quoted "accept" and "decline", the known original
/// does not.
#[test]
fn unknown_format_quote_of_the_invitation_never_decides() {
    let (_, sent, _) = customer_mails("en")
        .into_iter()
        .find(|(t, _, _)| *t == TemplateName::Invitation)
        .expect("invitation");
    let body = format!(
        "Nitapiga simu kesho.\n\nMnamo Jumanne tarehe 6 Januari 2026 Liaison aliandika hivi\n\n{}\n",
        rewrap(sent.html_text.as_deref().unwrap_or_default(), 50)
    );
    let leaked = new_text(&body);
    assert!(
        // The invitation's wording since issue 14: "reply to this mail
        // with accept on the first line … To decline, reply decline."
        leaked.contains("reply to this mail\nwith accept") && leaked.contains("reply decline"),
        "without the original the quote leaks: {leaked:?}"
    );
    let known = KnownOriginal::new(&[sent]);
    let got = new_text_known(&body, &known);
    assert_eq!(got, "Nitapiga simu kesho.");
    assert_eq!(detect(&got), Intent::Other);
}

/// The customer's own words that repeat a few words of the invitation stay
/// new text; a partial `>` quote with the answer below it and an inline
/// answer between quoted paragraphs keep the answer.
#[test]
fn own_words_partial_quotes_and_inline_answers_are_kept() {
    let (_, sent, _) = customer_mails("en")
        .into_iter()
        .find(|(t, _, _)| *t == TemplateName::Invitation)
        .expect("invitation");
    let known = KnownOriginal::new(std::slice::from_ref(&sent));

    let own = "We accept. Northwind Traders can manage our cloud services from now on.";
    let body = format!(
        "{own}\n\nOn Tue, 6 Jan 2026, Liaison <invites@liaison.test> wrote:\n{}",
        prefix_lines(&sent.text, "> ")
    );
    assert_eq!(new_text_known(&body, &known), own);

    let partial = "Op 6 jan. 2026 om 10:00 heeft Liaison het volgende geschreven:\n\n\
                   > How to answer:\n>   * To accept, reply to this mail with the word \"accept\" on the first line.\n\
                   >   * To decline, reply with the word \"decline\".\n\nDecline, thank you.\n";
    let got = new_text_known(partial, &known);
    assert_eq!(got, "Decline, thank you.");
    assert_eq!(detect(&got), Intent::Decline);

    let paragraphs: Vec<&str> = sent.text.split("\n\n").collect();
    let inline = format!(
        "{}\n\n{}\n\nYes, that is fine for us.\n\n{}\n",
        prefix_lines(paragraphs[0], "> "),
        prefix_lines(paragraphs[1], "> "),
        prefix_lines(&paragraphs[2..].join("\n\n"), "> ")
    );
    assert_eq!(new_text_known(&inline, &known), "Yes, that is fine for us.");
}

/// With nothing known, the known-original split is the heuristic split.
#[test]
fn empty_known_original_is_the_heuristic_split() {
    let known = KnownOriginal::new(&[]);
    assert!(known.is_empty());
    for body in [
        "Accept\n\nOn Tue, 6 Jan 2026, Desk <d@x.test> wrote:\n> decline",
        "plain text\nwith lines",
        "",
    ] {
        assert_eq!(new_text_known(body, &known), new_text(body));
    }
}
