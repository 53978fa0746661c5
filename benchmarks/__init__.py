"""The mdkeras benchmark suite: a case registry, run records, reports and the regression gate."""
