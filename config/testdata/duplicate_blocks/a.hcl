# An attribute set twice is a syntax error: this file is reported and
# skipped.
job "redefined" {
  source = source.local.prod
  source = source.local.prod
}
