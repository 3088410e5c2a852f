//! Column tables: each table is a list of [`Column`]s (header, width rule, alignment), and the
//! same description lays out `report`'s and `topology`'s text and `top`'s terminal tables, in
//! the spirit of util-linux's `irqtop`/`lsirq` column tables. Also the cell formatters every
//! view shares: [`fit`] (the one cut mark), [`pct`] and [`si`].
//!
//! Width rules, in order: every column gets its `min`; a `grow` column widens to its longest
//! value (numbers are never cut); what is left of the line goes to the `flex` columns by
//! weight, none beyond its `max`. A value longer than its column is cut with [`CUT`].

/// Marks a cut value: ASCII, so piped text stays ASCII and every terminal shows it.
pub(crate) const CUT: char = '~';

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

/// One column of a table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Column {
    header: &'static str,
    /// Shorter headers, longest first, taken when the column is too narrow for the header
    /// (a header is shortened rather than cut where it can be).
    short: &'static [&'static str],
    align: Align,
    min: usize,
    max: usize,
    /// Share of the spare width this column takes; 0: none.
    flex: usize,
    /// Widens to its longest value (up to `max`).
    grow: bool,
    /// What stands before the column (not before the first).
    sep: &'static str,
}

impl Column {
    /// A left-aligned column of `width`.
    pub(crate) const fn left(header: &'static str, width: usize) -> Column {
        Column {
            header,
            short: &[],
            align: Align::Left,
            min: width,
            max: width,
            flex: 0,
            grow: false,
            sep: " ",
        }
    }

    /// A right-aligned column of at least `width` that widens to its values: numbers.
    pub(crate) const fn right(header: &'static str, width: usize) -> Column {
        Column {
            align: Align::Right,
            grow: true,
            max: usize::MAX,
            ..Column::left(header, width)
        }
    }

    /// At least `min`, and `weight` shares of the spare width.
    pub(crate) const fn flex(self, min: usize, weight: usize) -> Column {
        Column {
            min,
            max: usize::MAX,
            flex: weight,
            ..self
        }
    }

    /// Widens to its values, up to `max`.
    pub(crate) const fn grow(self, max: usize) -> Column {
        Column {
            grow: true,
            max,
            ..self
        }
    }

    pub(crate) const fn short(self, short: &'static [&'static str]) -> Column {
        Column { short, ..self }
    }

    pub(crate) const fn sep(self, sep: &'static str) -> Column {
        Column { sep, ..self }
    }

    /// The header in `width`: the first form that fits, else cut.
    fn title(&self, width: usize) -> String {
        std::iter::once(&self.header)
            .chain(self.short)
            .find(|h| h.chars().count() <= width)
            .map_or_else(|| fit(self.header, width), |h| h.to_string())
    }

    /// `value` cut to `width` and aligned.
    fn cell(&self, width: usize, value: &str) -> String {
        let v = fit(value, width);
        match self.align {
            Align::Left => format!("{v:<width$}"),
            Align::Right => format!("{v:>width$}"),
        }
    }
}

/// A table: its columns and what stands before each line.
#[derive(Clone, Debug, Default)]
pub(crate) struct Table {
    indent: &'static str,
    columns: Vec<Column>,
}

impl Table {
    pub(crate) fn new(columns: Vec<Column>) -> Table {
        Table {
            indent: "",
            columns,
        }
    }

    pub(crate) fn indent(self, indent: &'static str) -> Table {
        Table { indent, ..self }
    }

    /// The column widths for lines of `width` columns holding `rows`.
    pub(crate) fn widths(&self, width: usize, rows: &[Vec<String>]) -> Vec<usize> {
        let mut w: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let longest = if c.grow {
                    rows.iter()
                        .filter_map(|r| r.get(i))
                        .map(|v| v.chars().count())
                        .max()
                        .unwrap_or(0)
                } else {
                    0
                };
                c.min.max(longest.min(c.max))
            })
            .collect();
        let used = self.indent.chars().count()
            + w.iter().sum::<usize>()
            + self
                .columns
                .iter()
                .skip(1)
                .map(|c| c.sep.chars().count())
                .sum::<usize>();
        let spare = width.saturating_sub(used);
        let weights: usize = self.columns.iter().map(|c| c.flex).sum();
        let last_flex = self.columns.iter().rposition(|c| c.flex > 0);
        let mut given = 0;
        for (i, c) in self.columns.iter().enumerate() {
            if c.flex == 0 {
                continue;
            }
            // The last flexible column takes the rounding rest.
            let share = if Some(i) == last_flex {
                spare - given
            } else {
                spare * c.flex / weights
            };
            let extra = share.min(c.max.saturating_sub(w[i]));
            given += extra;
            w[i] += extra;
        }
        w
    }

    /// The header's cells in `widths`.
    pub(crate) fn header_cells(&self, widths: &[usize]) -> Vec<String> {
        self.columns
            .iter()
            .zip(widths)
            .map(|(c, w)| c.cell(*w, &c.title(*w)))
            .collect()
    }

    /// A row's cells in `widths`, each cut and aligned as its column says.
    pub(crate) fn cells(&self, widths: &[usize], values: &[String]) -> Vec<String> {
        self.columns
            .iter()
            .zip(widths)
            .zip(values)
            .map(|((c, w), v)| c.cell(*w, v))
            .collect()
    }

    /// Cells joined into one line, without trailing blanks.
    fn line(&self, cells: &[String]) -> String {
        let mut line = self.indent.to_string();
        for (i, (c, cell)) in self.columns.iter().zip(cells).enumerate() {
            if i > 0 {
                line.push_str(c.sep);
            }
            line.push_str(cell);
        }
        line.truncate(line.trim_end().len());
        line
    }

    /// The header and `rows` as text lines of at most `width` columns (wider only where
    /// numbers need it).
    pub(crate) fn text(&self, width: usize, rows: &[Vec<String>]) -> String {
        self.render(&self.widths(width, rows), rows)
    }

    /// The header and `rows` as text lines in the column widths `w`.
    pub(crate) fn render(&self, w: &[usize], rows: &[Vec<String>]) -> String {
        let mut out = self.line(&self.header_cells(w));
        out.push('\n');
        for r in rows {
            out.push_str(&self.line(&self.cells(w, r)));
            out.push('\n');
        }
        out
    }
}

/// `s` cut to `width` characters, the cut marked with [`CUT`].
pub(crate) fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else if width == 0 {
        String::new()
    } else {
        let mut t: String = s.chars().take(width - 1).collect();
        t.push(CUT);
        t
    }
}

/// A percentage in at most 5 characters for 0..=100: "0.07", "12.3", "100".
pub(crate) fn pct(x: f64) -> String {
    // Sums of nothing are -0.0; measured time is never negative.
    let x = if x > 0.0 { x } else { 0.0 };
    if x < 10.0 {
        format!("{x:.2}")
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

/// 1234567 -> "1.2M", with at most 6 characters.
pub(crate) fn si(x: f64) -> String {
    if x < 1_000.0 {
        format!("{x:.0}")
    } else if x < 1_000_000.0 {
        format!("{:.1}k", x / 1e3)
    } else if x < 1e9 {
        format!("{:.1}M", x / 1e6)
    } else {
        format!("{:.1}G", x / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(rows: &[&[&str]]) -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| r.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn fixed_columns_align_and_cut_with_one_mark() {
        let t = Table::new(vec![Column::right("IRQ", 4), Column::left("NAME", 6)]);
        let text = t.text(80, &rows(&[&["36", "virtio1-input.0"], &["9", "acpi"]]));
        assert_eq!(text, " IRQ NAME\n  36 virti~\n   9 acpi\n");
    }

    #[test]
    fn numbers_widen_their_column_instead_of_being_cut() {
        let t = Table::new(vec![Column::right("IRQ", 4), Column::left("NAME", 4)]);
        let text = t.text(80, &rows(&[&["123456", "a"], &["7", "b"]]));
        assert_eq!(text, "   IRQ NAME\n123456 a\n     7 b\n");
    }

    #[test]
    fn flex_columns_share_the_rest_by_weight_up_to_their_max() {
        let t = Table::new(vec![
            Column::right("N", 2),
            Column::left("A", 0).flex(2, 3),
            Column::left("B", 0).flex(1, 2),
        ]);
        // 20 - (2 + 2 + 1 + 2 separators) = 13 spare: 7 to A (13 * 3 / 5), the rest to B.
        assert_eq!(t.widths(20, &[]), vec![2, 9, 7]);
        let capped = Table::new(vec![
            Column::left("A", 0).flex(0, 1),
            Column {
                max: 3,
                ..Column::left("B", 0).flex(0, 1)
            },
        ]);
        assert_eq!(capped.widths(20, &[]), vec![9, 3]);
        // Narrower than the minimums: minimums.
        assert_eq!(t.widths(3, &[]), vec![2, 2, 1]);
    }

    #[test]
    fn headers_shorten_before_they_are_cut() {
        let c = Column::left("DEVICE/QUEUE", 0).short(&["DEVICE", "DEV"]);
        assert_eq!(c.title(12), "DEVICE/QUEUE");
        assert_eq!(c.title(8), "DEVICE");
        assert_eq!(c.title(3), "DEV");
        assert_eq!(c.title(2), "D~");
    }

    #[test]
    fn separators_indent_and_no_trailing_blanks() {
        let t = Table::new(vec![
            Column::right("A", 2),
            Column::right("B", 2).sep(" | "),
            Column::left("NOTE", 0).flex(0, 1),
        ])
        .indent("  ");
        let text = t.text(20, &rows(&[&["1", "2", ""]]));
        assert_eq!(text, "   A |  B NOTE\n   1 |  2\n");
    }

    #[test]
    fn formatters_stay_narrow() {
        assert_eq!(fit("mlx5_comp12@pci:0000:3b:00.0", 16), "mlx5_comp12@pci~");
        assert_eq!(fit("eth0", 16), "eth0");
        assert_eq!(fit("eth0", 0), "");
        assert_eq!(si(999.0), "999");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(2_500_000.0), "2.5M");
        assert_eq!(pct(0.071), "0.07");
        assert_eq!(pct(12.34), "12.3");
        assert_eq!(pct(100.0), "100");
        assert_eq!(pct(-0.0), "0.00");
    }
}
