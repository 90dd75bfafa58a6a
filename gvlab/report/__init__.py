"""Reports: claims tables, report.json/report.md and figure helpers."""

from gvlab.report.tables import markdown_table as markdown_table
from gvlab.report.tables import text_table as text_table
from gvlab.report.writer import claims_text as claims_text
from gvlab.report.writer import write_report as write_report
