# Reference values for causalloc.stats.sequential (tests/unit/test_stats_sequential.py):
# Lan-DeMets O'Brien-Fleming-type spending ("asOF") group-sequential designs from rpact.
# Run: Rscript tests/reference/rpact_obf_boundaries.R > tests/reference/rpact_obf_boundaries.csv
library(rpact)
rows <- list()
for (alpha in c(0.025, 0.05)) {
  for (kmax in c(3, 6)) {
    d <- getDesignGroupSequential(kMax = kmax, alpha = alpha, sided = 1, typeOfDesign = "asOF",
                                  informationRates = (1:kmax) / kmax)
    rows[[length(rows) + 1]] <- data.frame(alpha = alpha, k_max = kmax, look = 1:kmax,
                                           information_rate = (1:kmax) / kmax,
                                           critical_z = d$criticalValues,
                                           alpha_spent = d$alphaSpent)
  }
}
out <- do.call(rbind, rows)
cat(sprintf("# rpact %s, R %s\n", packageVersion("rpact"), getRversion()))
write.csv(out, stdout(), row.names = FALSE)
