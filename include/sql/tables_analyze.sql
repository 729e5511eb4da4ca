ANALYZE {tables}
