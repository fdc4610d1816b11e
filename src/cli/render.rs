//! `render`: a template previewed with its sample data.

use anyhow::{Context as _, Result};
use liaison_core::config::Config;
use liaison_core::render::templates::TemplateName;

pub fn render(config: &Config, template: &str, locale: &str, eml: bool, json: bool) -> Result<()> {
    let name = TemplateName::parse(template)
        .with_context(|| format!("`{template}` is not a template name"))?;
    let templates = liaison::files::load_templates(&config.templates_dir)?;
    let vars = name.sample_vars();
    if eml {
        let plan = sample_plan(config, name, locale, vars);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // The envelope sender (keyed) is not part of what is printed.
        let ids = liaison_core::model::token::IdKey::new(
            config.security.token_secret.expose().as_bytes(),
        );
        let mail = liaison_core::render::compose::compose(config, &templates, &ids, &plan, now)?;
        print!("{}", mail.raw);
        return Ok(());
    }
    let r = templates.render(name, locale, &vars)?;
    if json {
        let v = serde_json::json!({"subject": r.subject, "text": r.text, "html": r.html});
        println!("{v}");
    } else {
        println!("Subject: {}\n", r.subject);
        println!("----- text/plain -----\n{}", r.text.trim_end());
        match &r.html {
            Some(html) => println!("----- text/html -----\n{}", html.trim_end()),
            None => println!("----- text/html -----\n(this template has no HTML part)"),
        }
    }
    Ok(())
}

/// A mail plan as the workflow would make it, filled with sample values.
fn sample_plan(
    config: &Config,
    name: TemplateName,
    locale: &str,
    vars: serde_json::Value,
) -> liaison_core::decide::MailPlan {
    use liaison_core::decide::Sender;
    // The recipient follows the naming: `*_desk` to the support desk,
    // `*_partner` and the transcript to the partner, the rest to the customer.
    let stem = name.as_str();
    let (to, from) = if stem.ends_with("_desk") {
        (config.addresses.support_desk.clone(), Sender::Commands)
    } else if stem.ends_with("_partner") || name == TemplateName::Transcript {
        (config.partners[0].emails[0].clone(), Sender::Commands)
    } else {
        let customer = vars["customer_email"]
            .as_str()
            .unwrap_or("customer@example.com");
        (customer.to_string(), Sender::Invitations)
    };
    let reply_to = matches!(name, TemplateName::Invitation | TemplateName::Restore)
        .then(|| vars["reply_address"].as_str().map(str::to_string))
        .flatten();
    liaison_core::decide::MailPlan {
        template: name,
        locale: locale.to_string(),
        to: vec![to],
        from,
        reply_to,
        message_id: format!(
            "preview.{}@{}",
            name.as_str(),
            config.addresses.message_id_domain()
        ),
        in_reply_to: None,
        references: vec![],
        vars,
        invitation: None,
        ticket: None,
        attachments: vec![],
    }
}
