# lmerTest reference values for the pooled mixed model (causalloc.stats.mixed.mixed_model).
#
# Reads the tables that make_mixed_tables.py writes (tests/reference/mixed/*.csv, listed in
# tables.csv), fits per non-reference condition c, on the blocks that have both c and the
# reference, by REML with lmerTest's Satterthwaite df (contest1D, 95% CI):
#   package:    y ~ condition + cell + (1 | seed) + (1 | seed:condition) + (1 | cell:seed)
#               (one cell: y ~ condition + (1 | seed))     -- the model causalloc fits
#   block_only: y ~ condition + cell + (1 | seed) + (1 | cell:seed)   -- the issue's lme4 model
#   no_block:   y ~ condition + cell + (1 | seed)          -- the model causalloc fitted before
# lme4's optimizer runs to tolerances of 1e-12 (its defaults stop about 1e-7 short of the
# REML optimum in deviance, which moves df and p by up to 4e-4 relative on these tables),
# and writes tests/reference/mixed_lmertest.csv. Tests compare against that file; CI needs no R.
#
#   python tests/reference/make_mixed_tables.py && Rscript tests/reference/make_mixed_reference.R
# (run from the repository root; Debian: apt-get install r-base-core r-cran-lme4 r-cran-lmertest)

suppressPackageStartupMessages(library(lmerTest))
folder <- file.path("tests", "reference", "mixed")
manifest <- read.csv(file.path(folder, "tables.csv"), stringsAsFactors = FALSE)

fit_row <- function(formula, data, name, level, model) {
  tight <- list(xtol_abs = 1e-12, ftol_abs = 1e-12, xtol_rel = 1e-12, ftol_rel = 1e-12)
  fit <- lmer(formula, data = data, REML = TRUE, control = lmerControl(optCtrl = tight))
  coefficient <- paste0("condition", level)
  L <- as.numeric(names(fixef(fit)) == coefficient)
  test <- contest1D(fit, L, confint = TRUE, level = 0.95)
  vc <- as.data.frame(VarCorr(fit))
  slope <- vc$sdcor[vc$grp == "seed:condition"]
  data.frame(
    table = name, contrast = paste(level, "-", levels(data$condition)[1]), model = model,
    formula = paste(deparse(formula, width.cutoff = 500L), collapse = ""),
    n_blocks = nrow(data) / 2, estimate = test$Estimate, se = test$`Std. Error`,
    df = test$df, t = test$`t value`, p = test$`Pr(>|t|)`, ci_lo = test$lower,
    ci_hi = test$upper, sd_seed_condition = if (length(slope)) slope else NA,
    sd_residual = sigma(fit), singular = isSingular(fit),
    versions = sprintf("R %s, lme4 %s, lmerTest %s", getRversion(),
                       packageVersion("lme4"), packageVersion("lmerTest"))
  )
}

rows <- list()
for (i in seq_len(nrow(manifest))) {
  spec <- manifest[i, ]
  table <- read.csv(file.path(folder, paste0(spec$table, ".csv")), stringsAsFactors = FALSE)
  cells <- strsplit(spec$cells, ":", fixed = TRUE)[[1]]
  table$y <- table[[spec$metric]]
  table$seed <- factor(table[[spec$replicate]])
  table$cell <- interaction(table[cells], drop = TRUE, sep = ":")
  table$block <- interaction(table$cell, table$seed, drop = TRUE, sep = "|")
  for (level in setdiff(unique(table[[spec$condition]]), spec$reference)) {
    pair <- table[table[[spec$condition]] %in% c(spec$reference, level), ]
    complete <- names(which(table(pair$block) == 2))
    pair <- droplevels(pair[pair$block %in% complete, ])
    pair$condition <- factor(pair[[spec$condition]], levels = c(spec$reference, level))
    if (nlevels(pair$cell) == 1) {
      rows[[length(rows) + 1]] <- fit_row(y ~ condition + (1 | seed), pair, spec$table,
                                          level, "package")
      next
    }
    models <- list(
      package = y ~ condition + cell + (1 | seed) + (1 | seed:condition) + (1 | cell:seed),
      block_only = y ~ condition + cell + (1 | seed) + (1 | cell:seed),
      no_block = y ~ condition + cell + (1 | seed)
    )
    for (model in names(models)) {
      rows[[length(rows) + 1]] <- fit_row(models[[model]], pair, spec$table, level, model)
    }
  }
}
out <- do.call(rbind, rows)
write.csv(out, file.path("tests", "reference", "mixed_lmertest.csv"), row.names = FALSE)
print(out[, c("table", "contrast", "model", "estimate", "se", "df", "p", "singular")])
