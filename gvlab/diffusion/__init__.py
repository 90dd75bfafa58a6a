"""Diffusion and flow models on one Gaussian-path core (Lai et al. 2025, *The Principles of Diffusion Models*).

Modules: `schedules` (VP linear / cosine, VE, rectified flow: alpha_t, sigma_t, derivatives, f, g^2),
`parameterisation` (eps / x0 / score / velocity conversions, probability-flow velocity), `losses` (eps, denoising
score matching, flow matching and x0 regression with time weightings; `make_method` with classifier-free-guidance
label dropout), `samplers` (Euler, Heun, DDIM, DPM-Solver-1/2, DDPM ancestral, reverse-SDE Euler-Maruyama, adaptive
diffrax Tsit5; guidance), `likelihood` (exact or Hutchinson log-likelihood through the probability-flow ODE),
`metrics` (sliced Wasserstein distance).
"""
