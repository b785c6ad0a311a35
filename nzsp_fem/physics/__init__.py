"""Physics layer: constants and derived parameters, the mixing rules, the scaling, one weak
form per equation, elasticity and J2 plasticity. Imports only nzsp_fem.config."""
