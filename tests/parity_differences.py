"""What neuralode does differently from torchdiffeq on purpose, one row per difference, each naming the
test in tests/test_parity_torchdiffeq.py that checks it. Plain data (no imports), so that the
documentation's migration page is generated from it."""

# What neuralode does differently from torchdiffeq on purpose (or where torchdiffeq is wrong); each row
# is checked by the test named in it.
DELIBERATE_DIFFERENCES = {
    "time_gradient": "odeint's dL/dt are the exact flow sensitivities (f at the output times), torchdiffeq's "
    "the derivative of its discrete solve (test_time_gradient_is_exact_flow_sensitivity)",
    "typed_errors": "bad input raises ValueError/TypeError naming the argument where torchdiffeq asserts "
    "(test_bad_input_raises_in_both)",
    "event_t_length": "with event_fn, t may be [t0] (torchdiffeq requires exactly [t0, t1]) "
    "(test_event_with_one_time)",
    "integer_t": "integer output times are accepted (torchdiffeq raises TypeError) (test_integer_times)",
    "mixed_dtype_tuple": "a tuple state with float32 and float64 members comes back (and is handed to func) "
    "member by member in its own dtype; torchdiffeq promotes every member to the common dtype "
    "(test_mixed_dtype_tuple_keeps_member_dtypes)",
    "adams_max_order": "explicit_adams max_order=k is Adams-Bashforth of order k after k-1 RK4 steps "
    "(default 4); torchdiffeq's max_order=M raises the order from 3 to M-1 after 2 RK4 steps (default 12): "
    "torchdiffeq's max_order=4 is neuralode's max_order=3 (test_fixed_grid_identical)",
    "dopri8_interpolant": "dopri8 fills output times with DOP853's own 7th-order dense output; torchdiffeq "
    "with the 4th-order fit it uses for every method, which misses rtol 1e-8 between dopri8's long steps "
    "(test_adaptive_against_reference)",
    "adams_nonuniform_t": "explicit_adams on an uneven grid (e.g. stepping on an uneven t) uses coefficients "
    "for the actual spacing; torchdiffeq's assume equal steps and lose accuracy there "
    "(test_adams_on_a_nonuniform_t_keeps_its_order)",
    "event_location": "neuralode locates an event by bisection to float rounding on the method's own "
    "interpolant; torchdiffeq bisects to atol on its 4th-order fit of the step (off by ~1e-5 for bosh3 and "
    "dopri8 at rtol 1e-7, by up to atol/2 on a fixed grid) (test_event_location)",
    "event_t_gradient": "neuralode's odeint and odeint_adjoint with event_fn give event_t its exact gradient "
    "(implicit function theorem); torchdiffeq's odeint returns it without one and its odeint_adjoint with a "
    "wrong one (0 for dt/dy0 below): only its odeint_event links it (test_event_t_gradient)",
    "both_tolerances_zero": "rtol = atol = 0 for an adaptive method: neuralode refuses it before any work "
    "(ValueError naming both); torchdiffeq fails an assert ('underflow in dt 0.0') in its initial step "
    "(test_both_tolerances_zero)",
    "implicit_adams_algorithm": "implicit_adams/fixed_adams are different predictor-corrector schemes in the "
    "two libraries (no max_order mapping makes them agree); each is tested against the reference at its "
    "4th order (test_implicit_adams_algorithm_differs) (test_implicit_adams_against_reference)",
    "dense_domain": "torchdiffeq's odeint_dense takes only dopri5, a tensor y0, t0 < t1 and a scalar time in "
    "[t0, t1) (it fails at t1 and backwards); neuralode's every adaptive method (test_odeint_dense)",
}
