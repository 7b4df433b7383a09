!> The namelist of paramlib_scm (one file, three groups; every entry optional except where
!> said). paramlib.couple writes it; docs/gcm-coupling.md ("The column host paramlib_scm") documents it with an example.
!>
!>   &scm_run       columns_file (required), output_file, nlev, nsteps, output_every, chunk_size,
!>                  sst_shift, wtg, device ('cpu' | 'cuda'), torch_threads
!>   &scm_column    parameter_names(:), parameter_values(:): any column-model parameter by its
!>                  name (column_host: PARAMETER_NAMES, e.g. 'dt', 'p_trop', 'sst_ref'), SI units
!>   &scm_coupling  mode ('physics' | 'ml' | 'hybrid' | 'stochastic'), model_path, model_sha256,
!>                  allow_missing_model, spread_max, ood_margin, seed, bm_tau, bm_rh, fix_water,
!>                  fix_precip, p_zero_above (paramlib_column_physics: column_physics_config)
!> Paths hold at most PATH_LEN - 1 characters: a value filling the whole buffer is refused, as
!> a longer one is cut to it when read.
module scm_config
  use, intrinsic :: iso_fortran_env, only: int64
  use physical_constants, only: wp
  use paramlib_column_physics, only: column_physics_config, mode_from_name
  implicit none
  private
  public :: scm_settings, read_settings, MAX_PARAMETERS

  integer, parameter :: MAX_PARAMETERS = 32
  integer, parameter :: PATH_LEN = 1024

  type :: scm_settings
    character(len=PATH_LEN) :: columns_file = ''
    character(len=PATH_LEN) :: output_file = 'scm.nc'
    integer :: nlev = 26
    integer :: nsteps = 72
    integer :: output_every = 3
    integer :: chunk_size = 16
    real(wp) :: sst_shift = 0.0_wp     !< K, added to every SST and to sst_ref (+4K: 4)
    logical :: wtg = .true.
    character(len=8) :: device = 'cpu'
    integer :: torch_threads = 1
    integer :: n_parameters = 0
    character(len=32) :: parameter_names(MAX_PARAMETERS) = ''
    real(wp) :: parameter_values(MAX_PARAMETERS) = 0.0_wp
    character(len=16) :: mode_name = 'physics'
    type(column_physics_config) :: coupling
  end type scm_settings

contains

  !> Settings from the namelist file at path; status 0 or 1 with a message naming the group.
  subroutine read_settings(path, s, status, message)
    character(len=*), intent(in) :: path
    type(scm_settings), intent(out) :: s
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    ! namelist variables: the defaults of scm_settings and column_physics_config
    character(len=PATH_LEN) :: columns_file, output_file, model_path
    character(len=64) :: model_sha256
    integer :: nlev, nsteps, output_every, chunk_size, torch_threads
    real(wp) :: sst_shift, spread_max, ood_margin, bm_tau, bm_rh, p_zero_above
    logical :: wtg, fix_water, fix_precip, allow_missing_model
    character(len=8) :: device
    character(len=16) :: mode
    integer(int64) :: seed
    character(len=32) :: parameter_names(MAX_PARAMETERS)
    real(wp) :: parameter_values(MAX_PARAMETERS)
    namelist /scm_run/ columns_file, output_file, nlev, nsteps, output_every, chunk_size, &
      sst_shift, wtg, device, torch_threads
    namelist /scm_column/ parameter_names, parameter_values
    namelist /scm_coupling/ mode, model_path, model_sha256, allow_missing_model, spread_max, &
      ood_margin, seed, bm_tau, bm_rh, fix_water, fix_precip, p_zero_above
    integer :: unit, ios
    character(len=256) :: iomsg
    character(len=16) :: group

    columns_file = s%columns_file
    output_file = s%output_file
    nlev = s%nlev
    nsteps = s%nsteps
    output_every = s%output_every
    chunk_size = s%chunk_size
    sst_shift = s%sst_shift
    wtg = s%wtg
    device = s%device
    torch_threads = s%torch_threads
    parameter_names = ''
    parameter_values = 0.0_wp
    mode = s%mode_name
    model_path = s%coupling%model_path
    model_sha256 = s%coupling%model_sha256
    allow_missing_model = s%coupling%allow_missing_model
    spread_max = s%coupling%spread_max
    ood_margin = s%coupling%ood_margin
    seed = s%coupling%seed
    bm_tau = s%coupling%bm_tau
    bm_rh = s%coupling%bm_rh
    fix_water = s%coupling%fix_water
    fix_precip = s%coupling%fix_precip
    p_zero_above = s%coupling%p_zero_above

    status = 1
    open (newunit=unit, file=path, status='old', action='read', iostat=ios, iomsg=iomsg)
    if (ios /= 0) then
      message = 'namelist ' // trim(path) // ': ' // trim(iomsg)
      return
    end if
    group = '&scm_run'
    read (unit, nml=scm_run, iostat=ios, iomsg=iomsg)
    if (ios == 0) then
      group = '&scm_column'
      rewind (unit)
      read (unit, nml=scm_column, iostat=ios, iomsg=iomsg)
      if (ios < 0) ios = 0   ! the group is optional
    end if
    if (ios == 0) then
      group = '&scm_coupling'
      rewind (unit)
      read (unit, nml=scm_coupling, iostat=ios, iomsg=iomsg)
      if (ios < 0) ios = 0
    end if
    close (unit)
    if (ios /= 0) then
      message = 'namelist ' // trim(path) // ' ' // trim(group) // ': ' // trim(iomsg)
      return
    end if

    s%columns_file = columns_file
    s%output_file = output_file
    s%nlev = nlev
    s%nsteps = nsteps
    s%output_every = output_every
    s%chunk_size = chunk_size
    s%sst_shift = sst_shift
    s%wtg = wtg
    s%device = device
    s%torch_threads = torch_threads
    s%n_parameters = count(len_trim(parameter_names) > 0)
    s%parameter_names = parameter_names
    s%parameter_values = parameter_values
    s%mode_name = mode
    s%coupling%mode = mode_from_name(mode)
    s%coupling%model_path = model_path
    s%coupling%model_sha256 = model_sha256
    s%coupling%allow_missing_model = allow_missing_model
    s%coupling%spread_max = spread_max
    s%coupling%ood_margin = ood_margin
    s%coupling%seed = seed
    s%coupling%bm_tau = bm_tau
    s%coupling%bm_rh = bm_rh
    s%coupling%fix_water = fix_water
    s%coupling%fix_precip = fix_precip
    s%coupling%p_zero_above = p_zero_above

    if (len_trim(s%columns_file) == 0) then
      message = '&scm_run: columns_file is required'
    else if (len_trim(columns_file) >= PATH_LEN) then   ! may have been cut short when read
      message = too_long('&scm_run: columns_file')
    else if (len_trim(output_file) >= PATH_LEN) then
      message = too_long('&scm_run: output_file')
    else if (len_trim(model_path) >= PATH_LEN) then
      message = too_long('&scm_coupling: model_path')
    else if (s%nsteps < 1 .or. s%output_every < 1 .or. s%chunk_size < 1 .or. s%nlev < 4 &
             .or. s%torch_threads < 1) then
      message = '&scm_run: nsteps, output_every, chunk_size, torch_threads must be >= 1, nlev >= 4'
    else if (s%device /= 'cpu' .and. s%device /= 'cuda') then
      message = '&scm_run: device must be ''cpu'' or ''cuda'', got ''' // trim(s%device) // ''''
    else if (s%coupling%mode < 0) then
      message = '&scm_coupling: mode must be physics, ml, hybrid or stochastic, got ''' // &
                trim(mode) // ''''
    else if (any(len_trim(parameter_names(s%n_parameters + 1:)) > 0)) then
      message = '&scm_column: parameter_names must be consecutive, from the first entry on'
    else
      status = 0
    end if

  contains

    pure function too_long(what) result(text)
      character(len=*), intent(in) :: what
      character(len=128) :: text
      write (text, '(a,i0,a)') what // ' is longer than ', PATH_LEN - 1, &
        ' characters: use a shorter path'
    end function too_long

  end subroutine read_settings

end module scm_config
