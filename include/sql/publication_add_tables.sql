-- Complete a publication (a re-run after tables were added): the listed tables join it.
ALTER PUBLICATION {publication} ADD TABLE {tables}
