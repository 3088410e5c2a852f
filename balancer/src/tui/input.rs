//! Keys to [`Command`]s. The only place that knows the terminal library's key type.
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::app::Command;

/// The command for `key`; `editing` when the filter line has the keyboard (letters are text
/// then), `help` while the help is open (any key closes it). `None` for keys that mean
/// nothing.
pub(crate) fn command(key: &KeyEvent, editing: bool, help: bool) -> Option<Command> {
    // Windows terminals also report releases; one press, one command.
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('d')) {
        return Some(Command::Quit);
    }
    if editing {
        return match key.code {
            KeyCode::Enter => Some(Command::FilterAccept),
            KeyCode::Esc => Some(Command::FilterCancel),
            KeyCode::Backspace => Some(Command::FilterBackspace),
            KeyCode::Char(c) if !ctrl => Some(Command::FilterChar(c)),
            _ => None,
        };
    }
    let cmd = match key.code {
        KeyCode::Char('q') | KeyCode::Char('Q') => Command::Quit,
        KeyCode::Char('?') | KeyCode::Char('h') | KeyCode::F(1) => Command::ToggleHelp,
        KeyCode::Char('s') | KeyCode::Char('S') => Command::CycleSort,
        KeyCode::Char('/') => Command::StartFilter,
        KeyCode::Char('p') | KeyCode::Char('P') | KeyCode::Char(' ') => Command::TogglePause,
        KeyCode::Char('+') | KeyCode::Char('=') => Command::Slower,
        KeyCode::Char('-') | KeyCode::Char('_') => Command::Faster,
        KeyCode::Up | KeyCode::Char('k') => Command::Up,
        KeyCode::Down | KeyCode::Char('j') => Command::Down,
        KeyCode::PageUp => Command::PageUp,
        KeyCode::PageDown => Command::PageDown,
        KeyCode::Home | KeyCode::Char('g') => Command::Home,
        KeyCode::End | KeyCode::Char('G') => Command::End,
        KeyCode::Tab | KeyCode::BackTab => Command::SwitchFocus,
        KeyCode::Enter => Command::Open,
        KeyCode::Esc | KeyCode::Backspace | KeyCode::Left => Command::Back,
        _ if help => Command::Back,
        _ => return None,
    };
    Some(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn keys_map_to_commands() {
        let c = |code| command(&key(code), false, false);
        assert_eq!(c(KeyCode::Char('q')), Some(Command::Quit));
        assert_eq!(c(KeyCode::Char('?')), Some(Command::ToggleHelp));
        assert_eq!(c(KeyCode::Char('s')), Some(Command::CycleSort));
        assert_eq!(c(KeyCode::Char('/')), Some(Command::StartFilter));
        assert_eq!(c(KeyCode::Char('p')), Some(Command::TogglePause));
        assert_eq!(c(KeyCode::Char('+')), Some(Command::Slower));
        assert_eq!(c(KeyCode::Char('-')), Some(Command::Faster));
        assert_eq!(c(KeyCode::PageDown), Some(Command::PageDown));
        assert_eq!(c(KeyCode::Enter), Some(Command::Open));
        assert_eq!(c(KeyCode::Esc), Some(Command::Back));
        assert_eq!(c(KeyCode::Char('x')), None);
        // With the help open, any key closes it.
        assert_eq!(
            command(&key(KeyCode::Char('x')), false, true),
            Some(Command::Back)
        );
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(command(&ctrl_c, false, false), Some(Command::Quit));
        assert_eq!(command(&ctrl_c, true, false), Some(Command::Quit));
    }

    #[test]
    fn while_editing_letters_are_text() {
        let c = |code| command(&key(code), true, false);
        assert_eq!(c(KeyCode::Char('q')), Some(Command::FilterChar('q')));
        assert_eq!(c(KeyCode::Char('/')), Some(Command::FilterChar('/')));
        assert_eq!(c(KeyCode::Enter), Some(Command::FilterAccept));
        assert_eq!(c(KeyCode::Esc), Some(Command::FilterCancel));
        assert_eq!(c(KeyCode::Backspace), Some(Command::FilterBackspace));
        assert_eq!(c(KeyCode::Down), None);
    }

    #[test]
    fn releases_are_ignored() {
        let mut k = key(KeyCode::Char('q'));
        k.kind = KeyEventKind::Release;
        assert_eq!(command(&k, false, false), None);
    }
}
