//! The terminal front end of `layerfs explore` (ratatui on crossterm): draws
//! [`Explorer`] and turns key presses into [`Key`]s. Fits 80x24: a title line, the layer list
//! (left) and the file tree (right), a status/prompt line and the key list.
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use crate::human::human_size;
use crate::inspect::diff::ChangeKind;
use crate::inspect::explore::{Explorer, Focus, Key, NodeKind, PromptKind, Resolver};
use crate::{Error, Result};

/// Every key, in one line of at most 80 columns.
const KEYS: &str = "Tab:pane \u{2191}\u{2193}:move \u{2190}\u{2192}/Enter:fold v:view x:extract c:changes s:size d:diff q:quit";

/// Restores the terminal when dropped (also on an error return).
struct TermGuard;

impl Drop for TermGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

pub fn run(mut ex: Explorer, resolve: &Resolver<'_>) -> Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(Error::Usage(
            "explore is interactive: run it in a terminal (for scripts: `layerfs layers`, \
             `layerfs diff`, `layerfs efficiency`)"
                .into(),
        ));
    }
    let mut term = ratatui::try_init().map_err(|e| Error::io("open terminal", "/dev/tty", e))?;
    let _guard = TermGuard;
    let mut offset = 0usize;
    while !ex.quit {
        term.draw(|f| draw(f, &ex, &mut offset))
            .map_err(|e| Error::io("draw", "/dev/tty", e))?;
        let ev = event::read().map_err(|e| Error::io("read key", "/dev/tty", e))?;
        let Event::Key(k) = ev else { continue };
        if k.kind != KeyEventKind::Press {
            continue;
        }
        let key = match k.code {
            KeyCode::Up => Key::Up,
            KeyCode::Down => Key::Down,
            KeyCode::Left => Key::Left,
            KeyCode::Right => Key::Right,
            KeyCode::Enter => Key::Enter,
            KeyCode::Tab => Key::Tab,
            KeyCode::Esc => Key::Esc,
            KeyCode::Backspace => Key::Backspace,
            KeyCode::PageUp => Key::PageUp,
            KeyCode::PageDown => Key::PageDown,
            KeyCode::Char(c) => Key::Char(c),
            _ => continue,
        };
        ex.key(key, resolve);
    }
    Ok(())
}

fn mark_style(m: Option<ChangeKind>) -> (char, Style) {
    match m {
        Some(ChangeKind::Added) => ('A', Style::default().fg(Color::Green)),
        Some(ChangeKind::Modified) => ('C', Style::default().fg(Color::Yellow)),
        Some(ChangeKind::Deleted) => ('D', Style::default().fg(Color::Red)),
        None => (' ', Style::default()),
    }
}

fn draw(f: &mut Frame, ex: &Explorer, offset: &mut usize) {
    let [title, body, status, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let mut t = format!(
        "layerfs explore {}  layers 0-{} of {}",
        ex.target.label,
        ex.layer,
        ex.layers.len()
    );
    if ex.changes_only {
        t.push_str("  [changes only]");
    }
    if ex.sort_by_size {
        t.push_str("  [by size]");
    }
    if let Some(c) = &ex.compare {
        t.push_str(&format!("  [vs {}]", c.label));
    }
    f.render_widget(
        Paragraph::new(t).style(Style::default().add_modifier(Modifier::BOLD)),
        title,
    );
    if let Some(v) = &ex.view {
        let lines: Vec<Line> = v
            .lines
            .iter()
            .skip(v.scroll)
            .map(|l| Line::raw(l.as_str()))
            .collect();
        let block = Block::default()
            .borders(Borders::ALL)
            .title(format!("{}  (q back)", v.title));
        f.render_widget(Paragraph::new(lines).block(block), body);
    } else {
        let [left, right] =
            Layout::horizontal([Constraint::Length(30), Constraint::Min(20)]).areas(body);
        draw_layers(f, ex, left);
        draw_tree(f, ex, right, offset);
    }
    let line = match &ex.prompt {
        Some(p) => {
            let what = match p.kind {
                PromptKind::Extract => "extract to",
                PromptKind::Compare => "diff against image",
            };
            format!("{what}: {}_", p.text)
        }
        None if !ex.status.is_empty() => ex.status.clone(),
        None => ex
            .layers
            .get(ex.layer)
            .and_then(|l| l.command.clone())
            .map(|c| format!("layer {}: {c}", ex.layer))
            .unwrap_or_default(),
    };
    f.render_widget(Paragraph::new(line), status);
    f.render_widget(
        Paragraph::new(KEYS).style(Style::default().add_modifier(Modifier::REVERSED)),
        keys,
    );
}

fn focused(ex: &Explorer, which: Focus) -> Style {
    if ex.focus == which {
        Style::default().fg(Color::Cyan)
    } else {
        Style::default()
    }
}

fn draw_layers(f: &mut Frame, ex: &Explorer, area: Rect) {
    let lines: Vec<Line> = ex
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let t = &l.totals;
            let text = format!(
                "{}{:>2} +{:<7} A{} C{} D{}",
                if i == ex.layer { '>' } else { ' ' },
                i,
                human_size(t.added_bytes),
                t.added,
                t.modified,
                t.removed
            );
            let style = if i == ex.layer {
                Style::default().add_modifier(Modifier::REVERSED)
            } else {
                Style::default()
            };
            Line::styled(text, style)
        })
        .collect();
    let h = area.height.saturating_sub(2) as usize;
    let skip = ex.layer.saturating_sub(h.saturating_sub(1));
    let block = Block::default()
        .borders(Borders::ALL)
        .title("Layers")
        .border_style(focused(ex, Focus::Layers));
    f.render_widget(
        Paragraph::new(lines.into_iter().skip(skip).collect::<Vec<_>>()).block(block),
        area,
    );
}

fn draw_tree(f: &mut Frame, ex: &Explorer, area: Rect, offset: &mut usize) {
    let h = area.height.saturating_sub(2) as usize;
    if ex.cursor < *offset {
        *offset = ex.cursor;
    } else if h > 0 && ex.cursor >= *offset + h {
        *offset = ex.cursor + 1 - h;
    }
    let lines: Vec<Line> = ex
        .rows
        .iter()
        .enumerate()
        .skip(*offset)
        .take(h)
        .map(|(i, &(id, depth))| {
            let n = ex.node(id);
            let (m, style) = mark_style(n.mark);
            let icon = match (n.kind, n.expanded) {
                (NodeKind::Dir, true) => "\u{25be} ",
                (NodeKind::Dir, false) => "\u{25b8} ",
                _ => "  ",
            };
            let size = n.size.map(human_size).unwrap_or_default();
            let slash = if n.kind == NodeKind::Dir { "/" } else { "" };
            let mut style = style;
            if i == ex.cursor && ex.focus == Focus::Tree {
                style = style.add_modifier(Modifier::REVERSED);
            }
            Line::from(vec![Span::styled(
                format!(
                    "{m} {size:>7} {}{icon}{}{slash}",
                    "  ".repeat(depth),
                    n.name
                ),
                style,
            )])
        })
        .collect();
    let block = Block::default()
        .borders(Borders::ALL)
        .title("Files (A added, C changed, D deleted)")
        .border_style(focused(ex, Focus::Tree));
    f.render_widget(Paragraph::new(lines).block(block), area);
}
