//! `upkeep jobs watch`: follows a job's event stream. On a terminal it redraws one progress
//! line (bar, rate, ETA); otherwise it prints plain lines. Exit 0 only when the job succeeded.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use futures_util::StreamExt;
use serde_json::Value;

use super::client::Client;

pub async fn watch(client: &Client, id: &str) -> Result<ExitCode, String> {
    follow(client, id, false).await
}

/// Follows the stream; `raw` prints each event as a JSON line on stdout instead of progress.
pub async fn follow(client: &Client, id: &str, raw: bool) -> Result<ExitCode, String> {
    let tty = std::io::stderr().is_terminal() && !raw;
    let mut last_id: Option<String> = None;
    // The bar on screen, redrawn under any other line so the final count stays visible.
    let mut bar: Option<String> = None;
    // The stream ends when the job does; a dropped connection is resumed with Last-Event-ID.
    for _ in 0..100 {
        let mut rb = client
            .request(reqwest::Method::GET, &format!("/v1/jobs/{id}/events"))
            .header("Accept", "text/event-stream");
        if let Some(last) = &last_id {
            rb = rb.header("Last-Event-ID", last);
        }
        let resp = rb.send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            let body: Value = resp.json().await.unwrap_or_default();
            return Err(format!(
                "{}: {}",
                body["code"].as_str().unwrap_or("error"),
                body["message"].as_str().unwrap_or("")
            ));
        }
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        let mut broken = false;
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                broken = true;
                break;
            };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                if let Some((event_id, data)) = parse_frame(&frame) {
                    last_id = Some(event_id);
                    if raw {
                        println!("{data}");
                    } else {
                        show(&data, tty, &mut bar);
                    }
                }
            }
        }
        if !broken {
            break;
        }
    }
    if tty {
        eprintln!();
    }
    let job = client
        .json(client.request(reqwest::Method::GET, &format!("/v1/jobs/{id}")))
        .await?;
    let state = job["state"].as_str().unwrap_or("unknown");
    eprintln!("job {id}: {state}");
    if let Some(msg) = job["error"]["message"].as_str() {
        eprintln!(
            "  {}: {msg}",
            job["error"]["code"].as_str().unwrap_or("error")
        );
    }
    Ok(match state {
        "succeeded" => ExitCode::SUCCESS,
        "cancelled" => ExitCode::from(3),
        _ => ExitCode::FAILURE,
    })
}

fn parse_frame(frame: &str) -> Option<(String, Value)> {
    let mut id = None;
    let mut data = String::new();
    for line in frame.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    Some((id?, serde_json::from_str(&data).ok()?))
}

fn show(event: &Value, tty: bool, bar: &mut Option<String>) {
    let data = &event["data"];
    match event["type"].as_str() {
        Some("progress") => {
            let line = progress_line(data);
            if tty {
                eprint!("\r\x1b[2K{line}");
                let _ = std::io::stderr().flush();
                *bar = Some(line);
            } else {
                eprintln!("{line}");
            }
        }
        Some(t) => {
            if tty {
                eprint!("\r\x1b[2K");
            }
            let msg = data["message"].as_str().unwrap_or("");
            let state = data["state"]
                .as_str()
                .map(|s| format!("[{s}] "))
                .unwrap_or_default();
            eprintln!("{t}: {state}{msg}");
            if let Some(line) = bar.as_deref().filter(|_| tty) {
                eprint!("{line}");
                let _ = std::io::stderr().flush();
            }
        }
        None => {}
    }
}

fn progress_line(p: &Value) -> String {
    let done = p["done"].as_u64().unwrap_or(0);
    let unit = p["unit"].as_str().unwrap_or("");
    let phase = p["phase"].as_str().unwrap_or("");
    let rate = p["rate_per_s"]
        .as_f64()
        .map(|r| format!("  {r:.1} {unit}/s"))
        .unwrap_or_default();
    let eta = p["eta_s"]
        .as_f64()
        .map(|e| format!("  ETA {}", human_secs(e)))
        .unwrap_or_default();
    match p["total"].as_u64() {
        Some(total) if total > 0 => {
            let width = 30;
            let filled = ((done.min(total) as f64 / total as f64) * width as f64) as usize;
            format!(
                "[{}{}] {done}/{total} {unit}{rate}{eta}  {phase}",
                "#".repeat(filled),
                ".".repeat(width - filled)
            )
        }
        _ => format!("{done} {unit}{rate}  {phase}"),
    }
}

fn human_secs(s: f64) -> String {
    let s = s as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
