/* real.h: the floating type of the model's tensors. The library is built with float;
 * the gradient-check test builds the same sources a second time with -DOFA_REAL_DOUBLE
 * (library ofamodel_f64) so that finite differences through the whole model are taken
 * in double precision and can be checked tightly. Nothing else uses the double build. */
#ifndef OFA_REAL_H
#define OFA_REAL_H

#ifdef OFA_REAL_DOUBLE
typedef double real_t;
#else
typedef float real_t;
#endif

#endif
