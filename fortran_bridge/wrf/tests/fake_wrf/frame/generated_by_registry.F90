!> Stand-ins for modules WRF's Registry generates, as the patched Registry would make them.
module module_state_description
  implicit none
  integer, parameter :: KFETASCHEME = 1, KFCUPSCHEME = 10, MSKFSCHEME = 11, NTIEDTKESCHEME = 16
  integer, parameter :: PARAMLIBSCHEME = 97
end module module_state_description

module module_configure
  implicit none
  type grid_config_rec_type
    integer :: cu_physics = 0
    character(len=256) :: paramlib_cu_model = 'paramlib_cu.pt'
    integer :: paramlib_cu_device = 0, paramlib_cu_device_index = 0
    integer :: paramlib_cu_fallback = 0, paramlib_cu_threads = 1
    character(len=256) :: paramlib_cu_sha256 = 'none'
    integer :: paramlib_cu_on_error = 0
    real :: paramlib_cu_top_fraction = 0.0005
    integer :: paramlib_cu_water_closure = 0, paramlib_cu_ood_every = 0
  end type grid_config_rec_type
end module module_configure

module module_domain
  implicit none
  type domain
    real, pointer :: rthcuten_pl(:, :, :) => null(), rqvcuten_pl(:, :, :) => null()
    real, pointer :: rqccuten_pl(:, :, :) => null(), rqrcuten_pl(:, :, :) => null()
    real, pointer :: rqicuten_pl(:, :, :) => null(), rqscuten_pl(:, :, :) => null()
    real, pointer :: nca_pl(:, :) => null()
  end type domain
end module module_domain

subroutine wrf_debug(level, str)
  implicit none
  integer, intent(in) :: level
  character(len=*), intent(in) :: str
  if (level < 0) print *, str
end subroutine wrf_debug
