# lmerTest reference values for the testbed-nested models of reports/oracle_vs_random_robust
# (issue 20): the pooled mixed model of analysis.json (mixed_models) and each objective's
# population-of-testbeds model (comparisons[].cluster_model), refitted from the committed
# selected_runs.csv (each arm at its selected learning rate; random draws averaged per block).
#
#   pooled:    y ~ condition + algorithm + (1 | testbed) + (1 | testbed:condition) + (1 | algorithm:testbed:seed)
#   objective: y ~ condition + (1 | testbed) + (1 | testbed:condition) + (1 | testbed:seed)
#
# REML, Satterthwaite df (contest1D), lme4 optimizer run to tight tolerances as in
# make_mixed_reference.R. Writes tests/reference/robust_lmertest.csv; tests compare
# causalloc against that file, so CI needs no R.
#   Rscript tests/reference/make_robust_reference.R      (from the repository root)
suppressPackageStartupMessages(library(lmerTest))
runs <- read.csv(file.path("reports", "oracle_vs_random_robust", "selected_runs.csv"),
                 stringsAsFactors = FALSE)
tight <- list(xtol_abs = 1e-12, ftol_abs = 1e-12, xtol_rel = 1e-12, ftol_rel = 1e-12)
rows <- list()
fit_one <- function(formula, pair, scope, metric, level, reference) {
  fit <- lmer(formula, data = pair, REML = TRUE, control = lmerControl(optCtrl = tight))
  L <- as.numeric(names(fixef(fit)) == paste0("condition", level))
  test <- contest1D(fit, L, confint = TRUE, level = 0.95)
  data.frame(scope = scope, metric = metric, contrast = paste(level, "-", reference),
             formula = paste(deparse(formula, width.cutoff = 500L), collapse = ""),
             n_blocks = nrow(pair) / 2, estimate = test$Estimate, se = test$`Std. Error`,
             df = test$df, p = test$`Pr(>|t|)`, ci_lo = test$lower, ci_hi = test$upper,
             singular = isSingular(fit),
             versions = sprintf("R %s, lme4 %s, lmerTest %s", getRversion(),
                                packageVersion("lme4"), packageVersion("lmerTest")))
}
for (metric in c("aues", "steps_to_target")) {
  for (contrast in list(c("oracle", "random"), c("oracle", "disjoint:oracle"))) {
    level <- contrast[1]; reference <- contrast[2]
    sub <- runs[runs$condition %in% contrast, ]
    means <- aggregate(sub[[metric]], by = list(testbed = sub$testbed, seed = sub$seed,
                       algorithm = sub$algorithm, condition = sub$condition), FUN = mean)
    names(means)[names(means) == "x"] <- "y"
    means$condition <- factor(means$condition, levels = c(reference, level))
    means$testbed <- factor(means$testbed)
    means$seed <- factor(means$seed)
    means$algorithm <- factor(means$algorithm)
    rows[[length(rows) + 1]] <- fit_one(
      y ~ condition + algorithm + (1 | testbed) + (1 | testbed:condition) + (1 | algorithm:testbed:seed),
      means, "pooled", metric, level, reference)
    for (algorithm in levels(means$algorithm)) {
      pair <- droplevels(means[means$algorithm == algorithm, ])
      rows[[length(rows) + 1]] <- fit_one(
        y ~ condition + (1 | testbed) + (1 | testbed:condition) + (1 | testbed:seed),
        pair, algorithm, metric, level, reference)
    }
  }
}
write.csv(do.call(rbind, rows), file.path("tests", "reference", "robust_lmertest.csv"), row.names = FALSE)
