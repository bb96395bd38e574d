//! The tray icon drawn in code: a filled dot in the state's colour (a ring while paused or
//! with the daemon down), so the state shows whatever icon theme the desktop has.

use crate::view::Overall;

/// A square ARGB32 image (network byte order), as StatusNotifierItem wants it.
pub struct Pixmap {
    pub size: i32,
    pub argb: Vec<u8>,
}

/// The icon for `state` at `size` pixels.
pub fn pixmap(state: &Overall, size: i32) -> Pixmap {
    let [r, g, b] = state.rgb();
    let hollow = matches!(state, Overall::Paused | Overall::DaemonDown);
    let c = (size as f32 - 1.0) / 2.0;
    let outer = size as f32 / 2.0 - 1.0;
    let inner = outer * 0.55;
    let mut argb = Vec::with_capacity((size * size * 4) as usize);
    for y in 0..size {
        for x in 0..size {
            let d = ((x as f32 - c).powi(2) + (y as f32 - c).powi(2)).sqrt();
            // One pixel of anti-aliasing at each edge.
            let mut alpha = (outer + 0.5 - d).clamp(0.0, 1.0);
            if hollow {
                alpha *= (d - inner + 0.5).clamp(0.0, 1.0);
            }
            argb.extend_from_slice(&[(alpha * 255.0) as u8, r, g, b]);
        }
    }
    Pixmap { size, argb }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alpha_at(p: &Pixmap, x: i32, y: i32) -> u8 {
        p.argb[((y * p.size + x) * 4) as usize]
    }

    #[test]
    fn states_look_different() {
        let up = pixmap(&Overall::UpToDate, 32);
        let paused = pixmap(&Overall::Paused, 32);
        assert_eq!(up.argb.len(), 32 * 32 * 4);
        // Filled dot: opaque centre, transparent corner.
        assert_eq!(alpha_at(&up, 16, 16), 255);
        assert_eq!(alpha_at(&up, 0, 0), 0);
        // Paused is a ring: hollow centre, opaque rim.
        assert_eq!(alpha_at(&paused, 16, 16), 0);
        assert_eq!(alpha_at(&paused, 16, 2), 255);
        assert_ne!(
            up.argb[1..4],
            pixmap(&Overall::Error("x".into()), 32).argb[1..4]
        );
    }
}
