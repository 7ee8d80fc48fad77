"""Document parsers: text and metadata from PDF, DOCX, HTML, text and data files."""
